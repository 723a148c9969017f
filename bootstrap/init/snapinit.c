/*
 * snapinit: PID 1 of every snapstart sandbox. It is never part of a snapshot.
 *
 *   snapinit [--proc DIR] [--chroot DIR] [--hostname N] [--ready-fd N] [--lifeline-fd N]
 *            [--keep-fd N]... [--owner TAG] [--] [PROGRAM ARG...]
 *
 * --proc DIR    mount a procfs of this PID namespace on DIR (nosuid, nodev, noexec,
 *               hidepid=invisible, else hidepid=2), so the sandbox sees only its own
 *               processes. The caller gives us a private mount namespace.
 * --chroot DIR  then chroot to DIR (the sandbox's root, snapstart/sandbox/mountns.py).
 * --hostname N  set the hostname of its (new) UTS namespace.
 * --ready-fd N  write "R" on fd N once the above is done, then close it.
 * --lifeline-fd N   the read end of a pipe only the manager writes to: when it
 *               reads EOF (the manager died, even by SIGKILL), snapinit exits and
 *               every process of the sandbox with it.
 * --owner TAG   ignored: names the installation in /proc/PID/cmdline (orphans.py).
 * --keep-fd N   fds above 2 that PROGRAM inherits; every other one is closed.
 * PROGRAM       (cold and publish sandboxes) started as our child, PID 2: the
 *               snapshot's root. When it exits, snapinit exits with its status
 *               (128 + N if signal N killed it, as a shell says), which ends the
 *               sandbox.
 * no PROGRAM    (restore slots) wait: CRIU restores the snapshot's root into this PID
 *               namespace as PID 2 (an external pid namespace, --inherit-fd); the
 *               host kills snapinit with SIGKILL to end the clone.
 *
 * Either way it reaps every process orphaned in the sandbox, ignores every signal a
 * process inside the sandbox could send it (PID 1 gets none it has no handler
 * for). Why a
 * separate C program: the snapshot then holds only the runtime (and in the agent
 * layout its agent), not a PID 1, and a restore slot can prepare the namespace
 * and its /proc before the snapshot is known, for about a millisecond.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_KEEP 8

static int mount_proc(const char *dir)
{
	unsigned long flags = MS_NOSUID | MS_NODEV | MS_NOEXEC;

	if (mount("proc", dir, "proc", flags, "hidepid=invisible") == 0)
		return 0;
	if (mount("proc", dir, "proc", flags, "hidepid=2") == 0)
		return 0;
	fprintf(stderr, "snapinit: mount proc on %s: %s\n", dir, strerror(errno));
	return -1;
}

/* close every fd from 3 up but the kept ones (and the ready fd) */
static void close_others(int *keep, int n)
{
	int lo = 3, i, j;

	for (i = 1; i < n; i++)                 /* insertion sort: n <= MAX_KEEP + 1 */
		for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int t = keep[j];

			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	for (i = 0; i < n; i++) {
		if (keep[i] < lo)
			continue;
		if (keep[i] > lo)
			syscall(SYS_close_range, lo, keep[i] - 1, 0);
		lo = keep[i] + 1;
	}
	syscall(SYS_close_range, lo, ~0U, 0);
}

int main(int argc, char **argv)
{
	const char *proc = NULL, *root = NULL, *hostname = NULL;
	int keep[MAX_KEEP + 2], nkeep = 0, ready = -1, lifeline = -1, sfd, i = 1;
	sigset_t all;
	pid_t main_pid = 0;

	if (getpid() != 1) {
		fprintf(stderr, "snapinit: must be PID 1 of a new PID namespace\n");
		return 125;
	}
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--proc") == 0 && i + 1 < argc)
			proc = argv[++i];
		else if (strcmp(argv[i], "--chroot") == 0 && i + 1 < argc)
			root = argv[++i];
		else if (strcmp(argv[i], "--hostname") == 0 && i + 1 < argc)
			hostname = argv[++i];
		else if (strcmp(argv[i], "--ready-fd") == 0 && i + 1 < argc)
			ready = atoi(argv[++i]);
		else if (strcmp(argv[i], "--lifeline-fd") == 0 && i + 1 < argc)
			lifeline = atoi(argv[++i]);
		else if (strcmp(argv[i], "--owner") == 0 && i + 1 < argc)
			i++;
		else if (strcmp(argv[i], "--keep-fd") == 0 && i + 1 < argc && nkeep < MAX_KEEP)
			keep[nkeep++] = atoi(argv[++i]);
		else if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else
			break;
	}
	if (proc && mount_proc(proc))
		return 125;
	if (hostname && sethostname(hostname, strlen(hostname))) {
		perror("snapinit: sethostname");
		return 125;
	}
	if (root && (chroot(root) || chdir("/"))) {
		fprintf(stderr, "snapinit: chroot %s: %s\n", root, strerror(errno));
		return 125;
	}
	keep[nkeep++] = ready;
	keep[nkeep++] = lifeline;
	close_others(keep, nkeep);
	prctl(PR_SET_NAME, "snapinit", 0, 0, 0);
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, NULL);
	if (i < argc) {
		main_pid = fork();
		if (main_pid < 0) {
			perror("snapinit: fork");
			return 125;
		}
		if (main_pid == 0) {
			if (ready >= 0)
				close(ready);
			if (lifeline >= 0)
				close(lifeline);
			sigprocmask(SIG_UNBLOCK, &all, NULL);
			execv(argv[i], argv + i);
			fprintf(stderr, "snapinit: exec %s: %s\n", argv[i], strerror(errno));
			_exit(127);
		}
	}
	sfd = signalfd(-1, &all, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0) {
		perror("snapinit: signalfd");
		return 125;
	}
	if (ready >= 0 && write(ready, "R", 1) == 1)
		close(ready);
	for (;;) {
		struct pollfd pfd[2] = { { sfd, POLLIN, 0 }, { lifeline, POLLIN, 0 } };
		struct signalfd_siginfo si;
		int status;
		pid_t pid;

		while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
			if (pid != main_pid)
				continue;
			/* as a shell reports it: a PID 1 cannot die of its own signal */
			if (WIFSIGNALED(status))
				return 128 + WTERMSIG(status);
			return WEXITSTATUS(status);
		}
		if (pid < 0 && errno == ECHILD && main_pid)
			return 125;
		if (poll(pfd, lifeline >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
			return 125;
		if (pfd[0].revents & POLLIN)
			while (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
				;
		if (lifeline >= 0 && (pfd[1].revents & (POLLIN | POLLHUP | POLLERR))) {
			char c;

			if (read(lifeline, &c, 1) <= 0)
				return 125;      /* the manager is gone: so is the sandbox */
		}
	}
}

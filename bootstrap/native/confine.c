/*
 * Confine a runtime: its own unprivileged uid/gid, no capabilities, no_new_privs,
 * and a seccomp filter. Order matters: drop groups, gid, uid (the kernel clears
 * every capability when all uids become non-zero), then PR_SET_NO_NEW_PRIVS (no
 * setuid binary or file capability can give them back), then the filter. uid or
 * gid 0 is refused: functions never run as root.
 *
 * The filter is a deny list (EPERM) of what a function never needs and a sandbox
 * escape often does: ptrace and cross-process memory access, keyrings, mounts and
 * namespaces, chroot, BPF, perf, kernel modules, kexec, reboot, swap, clock
 * changes, open_by_handle_at, userfaultfd, io_uring (which CRIU cannot checkpoint
 * either). Syscalls from a foreign ABI (i386/x32 on x86_64) are refused outright so
 * the list cannot be bypassed through another syscall table. Numbers come from the
 * build's <sys/syscall.h>, so they are right for the architecture it targets.
 * Installed filters are process state CRIU checkpoints and restores.
 *
 * Called on the runtime's thread before any other thread exists (the filter and
 * no_new_privs are per thread and inherited by threads created later).
 */
#define _GNU_SOURCE
#include "snapagent.h"

#include <errno.h>
#include <grp.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define AUDIT_ARCH_HERE AUDIT_ARCH_X86_64
#define X32_BIT 0x40000000
#elif defined(__aarch64__)
#define AUDIT_ARCH_HERE AUDIT_ARCH_AARCH64
#else
#error "snapagent: unsupported architecture"
#endif

static const int denied[] = {
	__NR_ptrace, __NR_process_vm_readv, __NR_process_vm_writev,
	__NR_keyctl, __NR_add_key, __NR_request_key,
	__NR_mount, __NR_umount2, __NR_pivot_root, __NR_chroot, __NR_unshare, __NR_setns,
	__NR_open_tree, __NR_move_mount, __NR_fsopen, __NR_fsconfig, __NR_fsmount,
	__NR_fspick, __NR_mount_setattr,
	__NR_bpf, __NR_perf_event_open, __NR_userfaultfd,
	__NR_init_module, __NR_finit_module, __NR_delete_module,
	__NR_kexec_load, __NR_kexec_file_load, __NR_reboot,
	__NR_swapon, __NR_swapoff, __NR_acct, __NR_syslog, __NR_quotactl,
	__NR_settimeofday, __NR_clock_settime, __NR_clock_adjtime, __NR_adjtimex,
	__NR_open_by_handle_at, __NR_name_to_handle_at,
	__NR_io_uring_setup, __NR_io_uring_enter, __NR_io_uring_register,
};
#define NDENIED ((int)(sizeof(denied) / sizeof(denied[0])))

int snapagent_seccomp_denied(int i)
{
	return i >= 0 && i < NDENIED ? denied[i] : -1;
}

static int install_filter(void)
{
	struct sock_filter prog[NDENIED + 6];
	int n = 0, i;

	prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						 offsetof(struct seccomp_data, arch));
	/* wrong arch: jump over the rest to the deny at the end */
	prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_HERE,
						 0, NDENIED + 3);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS,
						 offsetof(struct seccomp_data, nr));
#ifdef X32_BIT
	prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_BIT,
						 NDENIED + 1, 0);
#else
	prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, 0xffffffffu,
						 NDENIED + 1, 0);
#endif
	for (i = 0; i < NDENIED; i++)
		prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K,
							 (unsigned)denied[i], NDENIED - i, 0);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM);
	{
		struct sock_fprog fprog = { .len = (unsigned short)n, .filter = prog };

		return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &fprog, 0, 0);
	}
}

int snapagent_confine(int uid, int gid, int seccomp)
{
	if (uid <= 0 || gid <= 0) {
		errno = EPERM;
		return -EPERM;
	}
	if (setgroups(0, NULL) || setresgid(gid, gid, gid) || setresuid(uid, uid, uid))
		return -errno;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		return -errno;
	if (seccomp && install_filter())
		return -errno;
	return 0;
}

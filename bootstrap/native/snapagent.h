/*
 * snapagent: the sandbox agent (the Lambda Runtime API server and the host
 * channel, bootstrap/protocol.py), in C so that it needs no interpreter lock.
 *
 * Two ways to run it (bootstrap/protocol.py, "Layouts"):
 *   inproc  libsnapagent.so loaded into the Python runtime (bootstrap/inproc.py):
 *           snapagent_start() runs the agent on its own thread; the interpreter's
 *           main thread runs awslambdaric and calls snapagent_exit() when it ends.
 *           (The runtime client holds the GIL while it POSTs a result, so an agent
 *           thread written in Python would deadlock waiting for it.)
 *   agent   the snapagent executable is the sandbox's PID 2; on the host's start
 *           frame it forks, confines and execs the runtime (node, provided) and
 *           runs the same loop on its main thread.
 */
#ifndef SNAPSTART_SNAPAGENT_H
#define SNAPSTART_SNAPAGENT_H

#define SNAPAGENT_PROTOCOL 4           /* bootstrap/protocol.py VERSION */

/* inproc: start the agent thread. Returns 0 or -errno. init_type: "snap-start" or
 * "on-demand". The fds become the agent's (closed on exec). */
int snapagent_start(int ctl_fd, int listen_fd, int log_fd, const char *init_type);
/* inproc: the runtime ended with status: report it (its output first), end the
 * process. Does not return. */
void snapagent_exit(int status);
/* inproc, in a forked child: drop the agent's fds (no agent thread there) */
void snapagent_forget(void);
/* confine.c: uid/gid (never 0), no_new_privs, seccomp. 0 or -errno. */
int snapagent_confine(int uid, int gid, int seccomp);
int snapagent_seccomp_denied(int i);

#endif

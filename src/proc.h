/* SPDX-License-Identifier: MIT */
/* proc.h - child processes on the event loop (exec and stream handlers).
 *
 * A tn_proc is one spawned program in its own process group with three
 * non-blocking pipes. Its stdin is written from a buffer as the pipe takes
 * it, its stdout is read into a buffer the owner consumes, its stderr is
 * logged, dropped or handed to the owner line by line, and it is reaped
 * through a pidfd watched by the loop, so nothing ever blocks and no global
 * child table or SIGCHLD handler is needed.
 *
 * The daemon must ignore SIGPIPE (writing to a child that closed its stdin
 * then fails with EPIPE instead of killing us) and must never reap children
 * it did not spawn itself (no waitpid(-1), no SIGCHLD set to SIG_IGN). */
#ifndef TN_PROC_H
#define TN_PROC_H

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "config/config.h"

typedef struct tn_proc tn_proc;

/* PATH given to children when neither passenv nor env provides one. */
#define TN_PROC_DEFAULT_PATH "/usr/local/bin:/usr/bin:/bin"

typedef struct tn_proc_ops {
    /* New bytes are in tn_proc_stdout(p); eof is set once, when the pipe
     * closed (or was abandoned after a kill). May be NULL. */
    void (*on_stdout)(tn_proc *p, void *arg, bool eof);
    /* One stderr line without its newline, for TN_STDERR_CLIENT. */
    void (*on_stderr_line)(tn_proc *p, void *arg, const char *line, size_t len);
    /* The process was reaped and its stdout and stderr are closed. status is
     * waitpid()'s. This is the last callback; the owner may free p in it. */
    void (*on_done)(tn_proc *p, void *arg, int status);
} tn_proc_ops;

typedef struct tn_proc_opts {
    char *const *argv;     /* argv[0] without a '/' is looked up in the daemon's PATH */
    char *const *envp;     /* see tn_proc_env() */
    const char *cwd;       /* NULL or "": the daemon's */
    int stderr_mode;       /* enum tn_stderr_mode */
    size_t stderr_line_max; /* longer stderr lines are cut (0: 1024) */
    const char *name;      /* handler name for log lines (copied) */
    struct tn_log_limit *stderr_limit; /* TN_STDERR_LOG lines pass it (NULL: all); outlives the process */
} tn_proc_opts;

/* Start a process. On failure returns NULL with "cannot run ARGV0: reason"
 * in err. Callbacks only ever run from the loop, never inside these calls. */
tn_proc *tn_proc_spawn(struct event_base *base, const tn_proc_opts *o, const tn_proc_ops *ops, void *arg,
                       char *err, size_t errlen);

pid_t tn_proc_pid(const tn_proc *p);
/* What the child wrote to stdout and nobody consumed yet. */
struct evbuffer *tn_proc_stdout(tn_proc *p);

/* Queue bytes for stdin. Returns -1 once stdin is closed (by us, or because
 * the child closed its end: EPIPE drops what was queued). */
int tn_proc_write(tn_proc *p, const void *data, size_t len);
/* Bytes queued for stdin that the pipe has not taken yet. */
size_t tn_proc_stdin_pending(const tn_proc *p);
/* Close stdin after the queued bytes are written, or at once dropping them. */
void tn_proc_close_stdin(tn_proc *p, bool discard);

/* Signal the whole process group. Any kill marks the process as unwanted:
 * once it is reaped the rest of its group gets SIGKILL and output pipes
 * still held open by escaped descendants are abandoned, so on_done comes. */
void tn_proc_kill(tn_proc *p, int sig);
bool tn_proc_reaped(const tn_proc *p);

/* Release everything. A child still running gets SIGKILL and is reaped,
 * waiting at most a second (only destroy paths free a live process). */
void tn_proc_free(tn_proc *p);

/* The environment of a child of CONF, a NULL-terminated "K=V" array:
 * PATH=TN_PROC_DEFAULT_PATH, then the passenv variables present in the
 * daemon's environment, then EXTRA ("K=V" strings from the front end, e.g.
 * CGI variables; may be NULL), then conf env; a later source overrides an
 * earlier one for the same name. Nothing else of the daemon's environment
 * is passed. Free with tn_proc_env_free(). */
char **tn_proc_env(const tn_handler_conf *conf, char *const *extra);
void tn_proc_env_free(char **env);

/* A NULL-terminated copy of the pointers of LIST (config lists are not
 * terminated); the strings stay LIST's. Free with free(). */
char **tn_proc_argv(const tn_strlist *list);

/* Check that PROG would run: with a '/' it must be an executable file
 * (relative to CWD when set), otherwise found in the daemon's PATH.
 * Returns -1 with a message in err. */
int tn_proc_check_program(const char *prog, const char *cwd, char *err, size_t errlen);

/* tn_proc_check_program() on the command of CONF after checking that its
 * cwd, when set, is a directory. On failure *AT (when AT is set) is where
 * the value at fault is written. */
int tn_proc_check_conf(const tn_handler_conf *conf, tn_pos *at, char *err, size_t errlen);

/* "exit status N" or "killed by signal N". */
void tn_proc_status_text(int status, char *buf, size_t len);

/* Split BUF into lines: each '\n'-terminated line (a trailing '\r' removed,
 * cut to MAX bytes) goes to fn and is drained; a line longer than MAX is
 * delivered cut at MAX and the rest up to its newline dropped (*cutting
 * remembers that between calls). At EOF an unterminated rest is a line. */
void tn_proc_lines(struct evbuffer *buf, size_t max, bool eof, bool *cutting,
                   void (*fn)(void *arg, const char *line, size_t len), void *arg);

#endif

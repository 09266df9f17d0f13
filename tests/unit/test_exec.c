/* SPDX-License-Identifier: MIT */
/* test_exec.c - the exec and stream handlers (src/handlers/exec.c,
 * stream.c) and the process layer under them (src/proc.c), with real
 * processes on a real libevent loop, driven through the real registry:
 * replies, exit statuses, timeouts that take the whole process group down,
 * output caps, concurrency and queueing, cancellation, spawn failures,
 * environment and cwd, stderr modes, large payloads, and stream sessions.
 *
 * Every test ends by freeing the registry and requiring that the loop is
 * left with no event and the test process with no child: a process or
 * reaping event that outlived its handler fails the test, and ASan's leak
 * check catches any job or state nobody freed. The test process is a child
 * subreaper so that killed grandchildren come back to it to be reaped
 * (this container's init does not reap orphans, and a zombie still counts
 * as a member of its process group). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "handlers/handler.h"
#include "proc.h"

/* ---- fixture --------------------------------------------------------------- */

typedef struct fx {
    struct event_base *base;
    tn_registry *reg;
    char dir[128]; /* scratch directory, real path */
} fx;

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

/* Run the loop until pred(arg) holds or MS pass; returns pred(arg). */
static bool run_until(fx *f, bool (*pred)(void *), void *arg, int ms)
{
    struct event *tick = event_new(f->base, -1, EV_PERSIST, tick_cb, NULL);
    struct timeval tv = { 0, 10000 };
    event_add(tick, &tv);
    int64_t end = now_ms() + ms;
    while (!(pred && pred(arg)) && now_ms() < end)
        event_base_loop(f->base, EVLOOP_ONCE);
    event_free(tick);
    return pred && pred(arg);
}

static void run_for(fx *f, int ms)
{
    run_until(f, NULL, NULL, ms);
}

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    char tmpl[] = "/tmp/tn_exec_XXXXXX", real[PATH_MAX];
    if (!f || !mkdtemp(tmpl) || !realpath(tmpl, real) || strlen(real) >= sizeof(f->dir))
        return -1;
    memcpy(f->dir, real, strlen(real) + 1);
    f->base = event_base_new();
    f->reg = tn_registry_new(f->base, NULL);
    *state = f;
    return f->base && f->reg ? 0 : -1;
}

static bool no_events(void *arg)
{
    fx *f = arg;
    /* run_until's own tick is the one event allowed */
    return event_base_get_num_events(f->base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE) <= 1;
}

/* Reap what came back to us as subreaper; fail if anything still runs. */
static bool children_gone(int ms)
{
    int64_t end = now_ms() + ms;
    for (;;) {
        pid_t r = waitpid(-1, NULL, WNOHANG);
        if (r > 0)
            continue;
        if (r < 0 && errno == ECHILD)
            return true;
        if (now_ms() >= end)
            return false;
        usleep(5000);
    }
}

/* Children of this process that have not exited (zombies not counted). */
static int live_children(void)
{
    int n = 0;
    DIR *dir = opendir("/proc");
    assert_non_null(dir);
    struct dirent *e;
    while ((e = readdir(dir))) {
        char path[300], buf[512];
        if (e->d_name[0] < '0' || e->d_name[0] > '9')
            continue;
        snprintf(path, sizeof(path), "/proc/%s/stat", e->d_name);
        FILE *fp = fopen(path, "r");
        if (!fp)
            continue;
        size_t len = fread(buf, 1, sizeof(buf) - 1, fp);
        fclose(fp);
        buf[len] = '\0';
        const char *close = strrchr(buf, ')');
        char state;
        int ppid;
        if (close && sscanf(close + 2, "%c %d", &state, &ppid) == 2 && ppid == getpid() && state != 'Z')
            n++;
    }
    closedir(dir);
    return n;
}

/* Idle: no job, session or process holds the handler (the registry's own
 * reference is the one left). */
static bool handler_idle(void *arg)
{
    tn_handler *h = arg;
    return h->refs == 1 && h->stats.in_flight == 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    bool idle = true;
    if (f->reg) {
        /* every test leaves its handlers without jobs, sessions and
         * dying processes: then freeing the registry destroys them at once */
        for (size_t i = 0; i < tn_registry_count(f->reg); i++)
            idle = run_until(f, handler_idle, tn_registry_at(f->reg, i), 5000) && idle;
        tn_registry_free(f->reg, 0);
    }
    bool clean = run_until(f, no_events, f, 1000);
    event_base_free(f->base);
    char cmd[sizeof(f->dir) + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    (void)rc;
    free(f);
    assert_true(idle);                /* a job or session was never finished */
    assert_true(clean);               /* an event outlived its handler */
    assert_true(children_gone(3000)); /* a process outlived its handler */
    return 0;
}

/* ---- handlers ---------------------------------------------------------------- */

typedef struct spec {
    tn_handler_conf c;
    char *argv[8];
    tn_strpair env[4];
    char *passenv[4];
} spec;

static void spec_init(spec *s, int type, const char *name, const char *const *argv)
{
    memset(s, 0, sizeof(*s));
    size_t n = 0;
    while (argv[n] && n < 7) {
        s->argv[n] = (char *)argv[n];
        n++;
    }
    s->c.name = (char *)name;
    s->c.pos = (tn_pos){ "test.conf", 1, 1 };
    s->c.type = type;
    s->c.command.v = s->argv;
    s->c.command.n = n;
    s->c.timeout = 10000;
    s->c.max_concurrency = 16;
    s->c.max_queue = 1024;
    s->c.max_output = 1 << 20;
    s->c.stderr_mode = TN_STDERR_LOG;
    s->c.cwd = (char *)"";
    s->c.env.v = s->env;
    s->c.passenv.v = s->passenv;
}

/* Load specs as the registry does from a config; returns -1 with err. */
static int apply(fx *f, spec *specs, size_t n, char *err, size_t errlen)
{
    tn_handler_conf confs[8];
    for (size_t i = 0; i < n; i++)
        confs[i] = specs[i].c;
    tn_config cfg = { 0 };
    cfg.handlers = confs;
    cfg.nhandlers = n;
    return tn_registry_apply(f->reg, &cfg, err, errlen);
}

static tn_handler *add(fx *f, spec *s)
{
    char err[512] = "";
    int rc = apply(f, s, 1, err, sizeof(err));
    if (rc < 0)
        fail_msg("apply: %s", err);
    return tn_registry_find(f->reg, s->c.name);
}

/* ---- calls --------------------------------------------------------------------- */

typedef struct reply {
    bool done;
    tn_result res;
    char *data;
    size_t len;
    int64_t at_ms;
    tn_job *job;
} reply;

static void complete(tn_job *job, tn_result res, const char *data, size_t len)
{
    reply *r = job->fe;
    assert_false(r->done);
    r->done = true;
    r->res = res;
    r->data = malloc(len + 1);
    memcpy(r->data, data, len);
    r->data[len] = '\0';
    r->len = len;
    r->at_ms = now_ms();
    r->job = NULL;
}

static tn_result send_to(tn_handler *h, tn_session *s, const char *payload, size_t len, reply *r)
{
    memset(r, 0, sizeof(*r));
    tn_call c = { 0 };
    c.handler = h;
    c.payload = payload;
    c.len = len;
    c.ctx.listener = "test";
    c.ctx.remote_addr = "127.0.0.1:9";
    c.ctx.session = s;
    c.out = evbuffer_new();
    tn_result res = tn_handler_call(&c);
    if (res == TN_LATER) {
        assert_non_null(c.job);
        c.job->complete = complete;
        c.job->fe = r;
        r->job = c.job;
    } else {
        r->done = true;
        r->res = res;
        r->len = evbuffer_get_length(c.out);
        r->data = malloc(r->len + 1);
        evbuffer_remove(c.out, r->data, r->len);
        r->data[r->len] = '\0';
        r->at_ms = now_ms();
    }
    evbuffer_free(c.out);
    return res;
}

static tn_result ask(tn_handler *h, const char *payload, reply *r)
{
    return send_to(h, NULL, payload, strlen(payload), r);
}

typedef struct replies {
    reply *v;
    size_t n;
} replies;

static bool all_done(void *arg)
{
    replies *rs = arg;
    for (size_t i = 0; i < rs->n; i++)
        if (!rs->v[i].done)
            return false;
    return true;
}

static void wait_replies(fx *f, reply *v, size_t n, int ms)
{
    replies rs = { v, n };
    assert_true(run_until(f, all_done, &rs, ms));
}

static void free_replies(reply *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i].data);
}

static void expect(const reply *r, tn_result res, const char *data)
{
    assert_true(r->done);
    assert_int_equal(r->res, res);
    assert_string_equal(r->data, data);
}

static void write_script(const char *path, const char *body)
{
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fprintf(fp, "#!/bin/sh\n%s\n", body);
    fclose(fp);
    assert_int_equal(chmod(path, 0755), 0);
}

static pid_t read_pid(const char *path)
{
    FILE *fp = fopen(path, "r");
    if (!fp)
        return 0;
    int pid = 0;
    if (fscanf(fp, "%d", &pid) != 1)
        pid = 0;
    fclose(fp);
    return (pid_t)pid;
}

static bool file_has_pid(void *arg)
{
    return read_pid(arg) > 0;
}

static bool pid_gone(void *arg)
{
    pid_t pid = (pid_t)(intptr_t)arg;
    return kill(pid, 0) < 0 && errno == ESRCH;
}

/* ---- exec ------------------------------------------------------------------------ */

static void test_exec_roundtrip(void **state)
{
    fx *f = *state;
    spec s;
    spec_init(&s, TN_H_EXEC, "upper", (const char *[]){ "tr", "a-z", "A-Z", NULL });
    tn_handler *h = add(f, &s);
    reply r[5];
    assert_int_equal(ask(h, "hello world", &r[0]), TN_LATER);
    assert_int_equal(ask(h, "hello\n", &r[1]), TN_LATER);
    assert_int_equal(ask(h, "a\n\n", &r[2]), TN_LATER); /* only one newline goes */
    assert_int_equal(ask(h, "crlf\r\n", &r[3]), TN_LATER);
    assert_int_equal(ask(h, "", &r[4]), TN_LATER);
    wait_replies(f, r, 5, 5000);
    expect(&r[0], TN_REPLY, "HELLO WORLD");
    expect(&r[1], TN_REPLY, "HELLO");
    expect(&r[2], TN_REPLY, "A\n");
    expect(&r[3], TN_REPLY, "CRLF");
    expect(&r[4], TN_REPLY, "");
    assert_true(handler_idle(h));
    assert_int_equal(h->stats.calls, 5);
    assert_int_equal(h->stats.errors, 0);
    free_replies(r, 5);
}

static void test_exec_exit_status(void **state)
{
    fx *f = *state;
    spec s[2];
    spec_init(&s[0], TN_H_EXEC, "exit3", (const char *[]){ "sh", "-c", "exit 3", NULL });
    spec_init(&s[1], TN_H_EXEC, "killed", (const char *[]){ "sh", "-c", "kill -TERM $$", NULL });
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    tn_handler *h3 = tn_registry_find(f->reg, "exit3"), *hk = tn_registry_find(f->reg, "killed");
    reply r[2];
    assert_int_equal(ask(h3, "ignored input", &r[0]), TN_LATER);
    assert_int_equal(ask(hk, "", &r[1]), TN_LATER);
    wait_replies(f, r, 2, 5000);
    expect(&r[0], TN_FAIL, "exit status 3");
    expect(&r[1], TN_FAIL, "killed by signal 15");
    assert_int_equal(h3->stats.errors, 1);
    free_replies(r, 2);
}

static void test_exec_timeout_kills_group(void **state)
{
    fx *f = *state;
    char pidfile[256], bgfile[256], script[768];
    snprintf(pidfile, sizeof(pidfile), "%s/pid", f->dir);
    snprintf(bgfile, sizeof(bgfile), "%s/bg", f->dir);
    /* The leader and a background child: both must die. */
    snprintf(script, sizeof(script), "echo $$ > '%s'; sleep 10 & echo $! > '%s'; sleep 10", pidfile, bgfile);
    spec s;
    spec_init(&s, TN_H_EXEC, "slow", (const char *[]){ "sh", "-c", script, NULL });
    s.c.timeout = 200;
    tn_handler *h = add(f, &s);
    reply r;
    assert_int_equal(ask(h, "", &r), TN_LATER);
    /* the 200 ms timeout ends a 10 s script (3 s only bounds the wait) */
    wait_replies(f, &r, 1, 3000);
    expect(&r, TN_FAIL, "timeout");
    pid_t pgid = read_pid(pidfile), bg = read_pid(bgfile);
    assert_true(pgid > 0 && bg > 0);
    /* Killed grandchildren come back to us (subreaper) as zombies. */
    int64_t end = now_ms() + 1000;
    while ((kill(-pgid, 0) == 0 || kill(bg, 0) == 0) && now_ms() < end) {
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
        usleep(5000);
    }
    assert_int_equal(kill(bg, 0), -1);
    assert_int_equal(errno, ESRCH);
    assert_int_equal(kill(-pgid, 0), -1);
    assert_int_equal(errno, ESRCH);
    free_replies(&r, 1);
}

/* A descendant that left the process group (setsid) survives the group
 * kill and keeps stdout open: a timed-out job must not wait for it, whether
 * the leader was still running at the timeout or had already exited. */
static void test_exec_timeout_escaped_descendant(void **state)
{
    fx *f = *state;
    char pid0[256], pid1[256], scr0[512], scr1[512];
    const char *pidfile[2] = { pid0, pid1 };
    snprintf(pid0, sizeof(pid0), "%s/escaped0", f->dir);
    snprintf(pid1, sizeof(pid1), "%s/escaped1", f->dir);
    snprintf(scr0, sizeof(scr0), "setsid sh -c 'echo $$ > %.200s; exec sleep 5' & sleep 10", pid0);
    snprintf(scr1, sizeof(scr1), "setsid sh -c 'echo $$ > %.200s; exec sleep 5' &", pid1);
    spec s[2];
    spec_init(&s[0], TN_H_EXEC, "running", (const char *[]){ "sh", "-c", scr0, NULL });
    spec_init(&s[1], TN_H_EXEC, "exited", (const char *[]){ "sh", "-c", scr1, NULL });
    s[0].c.timeout = s[1].c.timeout = 200;
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    reply r[2];
    assert_int_equal(ask(tn_registry_find(f->reg, "running"), "", &r[0]), TN_LATER);
    assert_int_equal(ask(tn_registry_find(f->reg, "exited"), "", &r[1]), TN_LATER);
    /* done within 3 s: the job did not wait for the 5 s the escaped
     * descendant holds its stdout */
    replies rs = { r, 2 };
    bool done = run_until(f, all_done, &rs, 3000);
    pid_t escaped[2];
    for (int i = 0; i < 2; i++) {
        escaped[i] = read_pid(pidfile[i]);
        if (escaped[i] > 0) /* not ours to keep: it would fail the teardown */
            kill(escaped[i], SIGKILL);
    }
    assert_true(done);
    for (int i = 0; i < 2; i++) {
        expect(&r[i], TN_FAIL, "timeout");
        assert_true(escaped[i] > 0);
    }
    free_replies(r, 2);
}

/* Done means reaped AND stdout at EOF: output written by a descendant
 * after the leader exited belongs to the reply, and a process that closed
 * its stdout early is still waited for. */
static void test_exec_waits_for_exit_and_eof(void **state)
{
    fx *f = *state;
    spec s[2];
    spec_init(&s[0], TN_H_EXEC, "late", (const char *[]){ "sh", "-c", "echo a; (sleep 0.3; echo b) &", NULL });
    spec_init(&s[1], TN_H_EXEC, "mute", (const char *[]){ "sh", "-c", "exec >&- 2>&-; sleep 0.3; exit 4", NULL });
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    reply r[2];
    assert_int_equal(ask(tn_registry_find(f->reg, "late"), "", &r[0]), TN_LATER);
    assert_int_equal(ask(tn_registry_find(f->reg, "mute"), "", &r[1]), TN_LATER);
    wait_replies(f, r, 2, 3000);
    expect(&r[0], TN_REPLY, "a\nb");
    expect(&r[1], TN_FAIL, "exit status 4"); /* only known once it exited */
    free_replies(r, 2);
}

/* Children start clean: default signal dispositions and an empty mask
 * whatever the daemon has (it ignores SIGPIPE), and none of the daemon's
 * descriptors beyond 0-2, CLOEXEC or not. */
static void test_exec_child_hygiene(void **state)
{
    fx *f = *state;
    int fd = fcntl(0, F_DUPFD, 50); /* no O_CLOEXEC */
    assert_true(fd >= 50);
    char script[128];
    snprintf(script, sizeof(script),
             "grep -E 'SigBlk|SigIgn' /proc/$$/status | tr -d '\\t'; [ -e /proc/$$/fd/%d ] && echo leaked || echo closed",
             fd);
    spec s;
    spec_init(&s, TN_H_EXEC, "hygiene", (const char *[]){ "sh", "-c", script, NULL });
    tn_handler *h = add(f, &s);
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGUSR1);
    sigprocmask(SIG_BLOCK, &block, &old);
    reply r;
    assert_int_equal(ask(h, "", &r), TN_LATER);
    sigprocmask(SIG_SETMASK, &old, NULL);
    close(fd);
    wait_replies(f, &r, 1, 3000);
    assert_int_equal(r.res, TN_REPLY);
    unsigned long long blk = ~0ULL, ign = ~0ULL;
    char fds[16] = "";
    assert_int_equal(sscanf(r.data, "SigBlk:%llx SigIgn:%llx %15s", &blk, &ign, fds), 3);
    assert_int_equal(blk, 0);
    /* glibc's posix_spawn leaves its two internal signals (32, 33) ignored;
     * SIGPIPE (bit 12) and everything else must be back to default */
    assert_int_equal(ign & ~(3ULL << 31), 0);
    assert_string_equal(fds, "closed");
    free_replies(&r, 1);
}

static void test_exec_max_output(void **state)
{
    fx *f = *state;
    spec s[3];
    spec_init(&s[0], TN_H_EXEC, "exact", (const char *[]){ "head", "-c", "4096", "/dev/zero", NULL });
    spec_init(&s[1], TN_H_EXEC, "over", (const char *[]){ "head", "-c", "4097", "/dev/zero", NULL });
    spec_init(&s[2], TN_H_EXEC, "endless", (const char *[]){ "yes", NULL });
    for (int i = 0; i < 3; i++)
        s[i].c.max_output = 4096;
    char err[512];
    assert_int_equal(apply(f, s, 3, err, sizeof(err)), 0);
    reply r[3];
    assert_int_equal(ask(tn_registry_find(f->reg, "exact"), "", &r[0]), TN_LATER);
    assert_int_equal(ask(tn_registry_find(f->reg, "over"), "", &r[1]), TN_LATER);
    assert_int_equal(ask(tn_registry_find(f->reg, "endless"), "", &r[2]), TN_LATER);
    wait_replies(f, r, 3, 5000);
    assert_int_equal(r[0].res, TN_REPLY);
    assert_int_equal(r[0].len, 4096);
    expect(&r[1], TN_FAIL, "output too large");
    /* `yes` never stops by itself: it was killed for its output (a timeout
     * would say "timeout") */
    expect(&r[2], TN_FAIL, "output too large");
    free_replies(r, 3);
}

static void test_exec_concurrency(void **state)
{
    fx *f = *state;
    spec s;
    spec_init(&s, TN_H_EXEC, "nap", (const char *[]){ "sleep", "0.3", NULL });
    s.c.max_concurrency = 2;
    tn_handler *h = add(f, &s);
    reply r[5];
    for (int i = 0; i < 5; i++)
        assert_int_equal(ask(h, "", &r[i]), TN_LATER);
    /* Three waves in call order, {0,1}, {2,3}, {4}: a job starts when one
     * ends (from the same callback), so each count below is exact. */
    assert_int_equal(live_children(), 2);
    wait_replies(f, r, 2, 3000);
    assert_int_equal(live_children(), 2);
    assert_true(!r[2].done && !r[3].done && !r[4].done);
    wait_replies(f, r + 2, 2, 3000);
    assert_int_equal(live_children(), 1);
    assert_true(!r[4].done);
    wait_replies(f, r + 4, 1, 3000);
    for (int i = 0; i < 5; i++)
        expect(&r[i], TN_REPLY, "");
    assert_true(handler_idle(h));
    free_replies(r, 5);
}

static void test_exec_busy(void **state)
{
    fx *f = *state;
    spec s;
    spec_init(&s, TN_H_EXEC, "nap", (const char *[]){ "sleep", "0.1", NULL });
    s.c.max_concurrency = 1;
    s.c.max_queue = 2;
    tn_handler *h = add(f, &s);
    reply r[5];
    for (int i = 0; i < 3; i++)
        assert_int_equal(ask(h, "", &r[i]), TN_LATER); /* one runs, two wait */
    assert_int_equal(ask(h, "", &r[3]), TN_FAIL);
    expect(&r[3], TN_FAIL, "busy");
    wait_replies(f, r, 3, 5000);
    for (int i = 0; i < 3; i++)
        expect(&r[i], TN_REPLY, "");
    /* the queue drained: room again */
    assert_int_equal(ask(h, "", &r[4]), TN_LATER);
    wait_replies(f, &r[4], 1, 5000);
    expect(&r[4], TN_REPLY, "");
    free_replies(r, 5);
}

static void test_exec_cancel(void **state)
{
    fx *f = *state;
    spec s;
    /* payload "PIDFILE SECONDS" */
    spec_init(&s, TN_H_EXEC, "c", (const char *[]){ "sh", "-c", "read f t; echo $$ > \"$f\"; exec sleep \"$t\"", NULL });
    s.c.max_concurrency = 1;
    tn_handler *h = add(f, &s);
    char pa[256], pb[256], pc[256], msg[3][272];
    snprintf(pa, sizeof(pa), "%s/a", f->dir);
    snprintf(pb, sizeof(pb), "%s/b", f->dir);
    snprintf(pc, sizeof(pc), "%s/c", f->dir);
    snprintf(msg[0], sizeof(msg[0]), "%s 10", pa);
    snprintf(msg[1], sizeof(msg[1]), "%s 10", pb);
    snprintf(msg[2], sizeof(msg[2]), "%s 0", pc);
    reply a, b, c;
    assert_int_equal(ask(h, msg[0], &a), TN_LATER);
    assert_int_equal(ask(h, msg[1], &b), TN_LATER); /* queued behind a */
    assert_true(run_until(f, file_has_pid, pa, 3000));
    pid_t pid_a = read_pid(pa);

    tn_job_cancel(b.job); /* queued: ends now, never runs */
    assert_int_equal(h->stats.in_flight, 1);
    tn_job_cancel(a.job); /* running: killed */
    assert_true(run_until(f, pid_gone, (void *)(intptr_t)pid_a, 2000));

    /* The slot is free again only if a's run really ended. */
    assert_int_equal(ask(h, msg[2], &c), TN_LATER);
    wait_replies(f, &c, 1, 3000);
    expect(&c, TN_REPLY, "");
    run_for(f, 100);
    assert_false(a.done); /* nothing delivered for cancelled jobs */
    assert_false(b.done);
    assert_int_equal(access(pb, F_OK), -1);
    assert_true(handler_idle(h)); /* both jobs were finished */
    free_replies(&c, 1);
}

static void test_exec_spawn_failure(void **state)
{
    fx *f = *state;
    char prog[256], err[512] = "", want[320];
    spec s;

    /* init refuses programs that cannot run */
    spec_init(&s, TN_H_EXEC, "missing", (const char *[]){ "/nonexistent/tn-prog", NULL });
    assert_int_equal(apply(f, &s, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "handler 'missing': cannot run /nonexistent/tn-prog: No such file or directory"));
    spec_init(&s, TN_H_EXEC, "nopath", (const char *[]){ "tn-no-such-program", NULL });
    assert_int_equal(apply(f, &s, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cannot run tn-no-such-program: not found in PATH"));
    spec_init(&s, TN_H_EXEC, "badcwd", (const char *[]){ "true", NULL });
    s.c.cwd = (char *)"/nonexistent-dir";
    assert_int_equal(apply(f, &s, 1, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "cwd /nonexistent-dir: No such file or directory"));

    /* the program disappears after init: failure at spawn time, both for a
     * call answered at once and for one that was queued */
    char started[256];
    snprintf(prog, sizeof(prog), "%s/prog", f->dir);
    snprintf(started, sizeof(started), "%s/started", f->dir);
    write_script(prog, "echo $$ > \"$(dirname \"$0\")/started\"; sleep 0.2");
    spec_init(&s, TN_H_EXEC, "vanishing", (const char *[]){ prog, NULL });
    s.c.max_concurrency = 1;
    tn_handler *h = add(f, &s);
    reply r[3];
    assert_int_equal(ask(h, "", &r[0]), TN_LATER);
    assert_int_equal(ask(h, "", &r[1]), TN_LATER);
    /* once the first run's shell has read its script */
    assert_true(run_until(f, file_has_pid, started, 3000));
    assert_int_equal(unlink(prog), 0);
    wait_replies(f, r, 2, 3000);
    snprintf(want, sizeof(want), "cannot run %s: No such file or directory", prog);
    expect(&r[0], TN_REPLY, "");
    expect(&r[1], TN_FAIL, want);
    assert_int_equal(ask(h, "", &r[2]), TN_FAIL);
    expect(&r[2], TN_FAIL, want);
    assert_true(handler_idle(h));
    free_replies(r, 3);
}

static void test_exec_env_cwd(void **state)
{
    fx *f = *state;
    setenv("TN_TEST_PASS", "passed", 1);
    setenv("TN_TEST_HIDDEN", "hidden", 1);
    setenv("TN_TEST_OVER", "daemon", 1);
    spec s[2];
    const char *show = "echo \"$FOO|$TN_TEST_PASS|$TN_TEST_HIDDEN|$TN_TEST_OVER|$PATH\"; pwd";
    spec_init(&s[0], TN_H_EXEC, "env", (const char *[]){ "sh", "-c", show, NULL });
    s[0].env[0] = (tn_strpair){ "FOO", "bar" };
    s[0].env[1] = (tn_strpair){ "TN_TEST_OVER", "conf" }; /* env beats passenv */
    s[0].c.env.n = 2;
    s[0].passenv[0] = "TN_TEST_PASS";
    s[0].passenv[1] = "TN_TEST_OVER";
    s[0].passenv[2] = "TN_TEST_UNSET";
    s[0].c.passenv.n = 3;
    s[0].c.cwd = f->dir;
    spec_init(&s[1], TN_H_EXEC, "path", (const char *[]){ "sh", "-c", "echo \"$PATH\"", NULL });
    s[1].passenv[0] = "PATH";
    s[1].c.passenv.n = 1;
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    reply r[2];
    assert_int_equal(ask(tn_registry_find(f->reg, "env"), "", &r[0]), TN_LATER);
    assert_int_equal(ask(tn_registry_find(f->reg, "path"), "", &r[1]), TN_LATER);
    wait_replies(f, r, 2, 3000);
    char want[512];
    snprintf(want, sizeof(want), "bar|passed||conf|%s\n%s", TN_PROC_DEFAULT_PATH, f->dir);
    expect(&r[0], TN_REPLY, want);
    expect(&r[1], TN_REPLY, getenv("PATH"));
    free_replies(r, 2);
}

/* stderr goes to the log through fd 2: capture it in a file meanwhile */
static int capture_stderr(const char *path)
{
    fflush(stderr);
    int saved = dup(2);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(saved >= 0 && fd >= 0);
    dup2(fd, 2);
    close(fd);
    return saved;
}

static char *restore_stderr(int saved, const char *path)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    char *buf = calloc(1, 65536);
    size_t n = fread(buf, 1, 65535, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void test_exec_stderr_modes(void **state)
{
    fx *f = *state;
    const char *argv[] = { "sh", "-c", "echo oops >&2; echo second >&2; echo out; exit 1", NULL };
    spec s[4];
    spec_init(&s[0], TN_H_EXEC, "errclient", argv);
    s[0].c.stderr_mode = TN_STDERR_CLIENT;
    spec_init(&s[1], TN_H_EXEC, "errlog", argv);
    s[1].c.stderr_mode = TN_STDERR_LOG;
    spec_init(&s[2], TN_H_EXEC, "errdiscard", argv);
    s[2].c.stderr_mode = TN_STDERR_DISCARD;
    /* client mode, but success: the reply is stdout only */
    spec_init(&s[3], TN_H_EXEC, "errok", (const char *[]){ "sh", "-c", "echo noise >&2; echo fine", NULL });
    s[3].c.stderr_mode = TN_STDERR_CLIENT;
    char err[512], logpath[256];
    assert_int_equal(apply(f, s, 4, err, sizeof(err)), 0);
    snprintf(logpath, sizeof(logpath), "%s/log", f->dir);
    reply r[4];
    int saved = capture_stderr(logpath);
    ask(tn_registry_find(f->reg, "errclient"), "", &r[0]);
    ask(tn_registry_find(f->reg, "errlog"), "", &r[1]);
    ask(tn_registry_find(f->reg, "errdiscard"), "", &r[2]);
    ask(tn_registry_find(f->reg, "errok"), "", &r[3]);
    replies rs = { r, 4 };
    bool ok = run_until(f, all_done, &rs, 3000);
    char *log = restore_stderr(saved, logpath);
    assert_true(ok);
    expect(&r[0], TN_FAIL, "exit status 1: oops");
    expect(&r[1], TN_FAIL, "exit status 1");
    expect(&r[2], TN_FAIL, "exit status 1");
    expect(&r[3], TN_REPLY, "fine");
    assert_non_null(strstr(log, "handler errlog: oops\n"));
    assert_non_null(strstr(log, "handler errlog: second\n"));
    assert_null(strstr(log, "errdiscard"));
    assert_null(strstr(log, "errclient"));
    free(log);
    free_replies(r, 4);
}

static void test_exec_large_payload(void **state)
{
    fx *f = *state;
    spec s[2];
    spec_init(&s[0], TN_H_EXEC, "cat", (const char *[]){ "cat", NULL });
    s[0].c.max_output = 2 << 20;
    /* does not read its stdin at all: EPIPE is not an error */
    spec_init(&s[1], TN_H_EXEC, "deaf", (const char *[]){ "sh", "-c", "exec 0<&-; echo done", NULL });
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    size_t n = 1 << 20;
    char *payload = malloc(n + 1);
    for (size_t i = 0; i < n; i++)
        payload[i] = i % 101 == 100 ? '\n' : (char)('a' + (i * 7) % 26);
    payload[n - 1] = 'z';
    payload[n] = '\0';
    reply r[2];
    assert_int_equal(send_to(tn_registry_find(f->reg, "cat"), NULL, payload, n, &r[0]), TN_LATER);
    assert_int_equal(send_to(tn_registry_find(f->reg, "deaf"), NULL, payload, n, &r[1]), TN_LATER);
    wait_replies(f, r, 2, 10000);
    assert_int_equal(r[0].res, TN_REPLY);
    assert_int_equal(r[0].len, n);
    assert_memory_equal(r[0].data, payload, n);
    expect(&r[1], TN_REPLY, "done");
    free(payload);
    free_replies(r, 2);
}

/* ---- stream ------------------------------------------------------------------------ */

typedef struct fsess {
    tn_session s; /* first: the handler sees only this */
    char *lines[64];
    size_t n;
    int closes;
    char reason[64];
    bool detach_in_close;
} fsess;

static int fs_push(tn_session *s, const char *data, size_t len)
{
    fsess *fs = (fsess *)s;
    assert_true(fs->n < 64);
    fs->lines[fs->n++] = strndup(data, len);
    return 0;
}

static void fs_close(tn_session *s, const char *reason)
{
    fsess *fs = (fsess *)s;
    fs->closes++;
    snprintf(fs->reason, sizeof(fs->reason), "%s", reason);
    if (fs->detach_in_close)
        tn_session_detach_all(s);
}

static const tn_session_ops fs_ops = { fs_push, fs_close };

static fsess *fs_new(uint64_t id)
{
    fsess *fs = calloc(1, sizeof(*fs));
    fs->s.ops = &fs_ops;
    fs->s.id = id;
    fs->s.listener = "test";
    return fs;
}

/* Detach and free: any later use of the session by the handler is a
 * use-after-free that ASan reports. */
static void fs_end(fsess *fs)
{
    tn_session_detach_all(&fs->s);
    for (size_t i = 0; i < fs->n; i++)
        free(fs->lines[i]);
    free(fs);
}

typedef struct want_lines {
    fsess *fs;
    size_t n;
} want_lines;

static bool has_lines(void *arg)
{
    want_lines *w = arg;
    return w->fs->n >= w->n;
}

static bool closed(void *arg)
{
    return ((fsess *)arg)->closes > 0;
}

static bool has_line(fsess *fs, const char *line)
{
    for (size_t i = 0; i < fs->n; i++)
        if (strcmp(fs->lines[i], line) == 0)
            return true;
    return false;
}

static tn_result say(tn_handler *h, fsess *fs, const char *msg)
{
    reply r;
    tn_result res = send_to(h, &fs->s, msg, strlen(msg), &r);
    free(r.data);
    return res;
}

static void test_stream_echo(void **state)
{
    fx *f = *state;
    spec s;
    spec_init(&s, TN_H_STREAM, "cat", (const char *[]){ "cat", NULL });
    tn_handler *h = add(f, &s);
    fsess *a = fs_new(1), *b = fs_new(2);
    assert_int_equal(say(h, a, "one"), TN_SILENT);
    assert_int_equal(say(h, a, "two"), TN_SILENT);
    assert_int_equal(say(h, a, "cr\r"), TN_SILENT);
    assert_int_equal(say(h, b, "other"), TN_SILENT); /* its own process */
    want_lines w = { a, 3 }, wb = { b, 1 };
    assert_true(run_until(f, has_lines, &w, 3000));
    assert_true(run_until(f, has_lines, &wb, 3000));
    assert_int_equal(a->n, 3);
    assert_string_equal(a->lines[0], "one");
    assert_string_equal(a->lines[1], "two");
    assert_string_equal(a->lines[2], "cr");
    assert_int_equal(b->n, 1);
    assert_string_equal(b->lines[0], "other");
    assert_int_equal(a->closes, 0);
    fs_end(a);
    fs_end(b);
    /* the dying processes keep the handler until they are reaped */
    assert_true(run_until(f, handler_idle, h, 3000));
}

static void test_stream_exit_closes(void **state)
{
    fx *f = *state;
    spec s;
    spec_init(&s, TN_H_STREAM, "once", (const char *[]){ "sh", "-c", "read x; echo \"got $x\"; exit 0", NULL });
    tn_handler *h = add(f, &s);
    fsess *a = fs_new(1), *b = fs_new(2);
    b->detach_in_close = true; /* a front end that detaches inside close() */
    assert_int_equal(say(h, a, "hi"), TN_SILENT);
    assert_int_equal(say(h, b, "ho"), TN_SILENT);
    assert_true(run_until(f, closed, a, 3000));
    assert_true(run_until(f, closed, b, 3000));
    assert_int_equal(a->closes, 1);
    assert_string_equal(a->reason, "process exited");
    assert_int_equal(a->n, 1); /* output pushed before the close */
    assert_string_equal(a->lines[0], "got hi");
    assert_int_equal(b->closes, 1);
    assert_string_equal(b->lines[0], "got ho");
    assert_null(b->s.attached);
    /* a message after the exit but before the front end closed: dropped */
    assert_int_equal(say(h, a, "late"), TN_SILENT);
    run_for(f, 50);
    assert_int_equal(a->closes, 1);
    fs_end(a);
    fs_end(b);
    assert_true(handler_idle(h));
}

static bool pid_line(void *arg)
{
    fsess *fs = arg;
    return fs->n > 0;
}

static void test_stream_detach_kills(void **state)
{
    fx *f = *state;
    spec s[3];
    /* Leaves on SIGTERM (not on stdin EOF), saying goodbye on stdout: the
     * goodbye must not reach the session, which is freed by then. */
    spec_init(&s[0], TN_H_STREAM, "polite",
              (const char *[]){ "sh", "-c", "trap 'echo bye; exit 0' TERM; echo $$; while :; do sleep 0.05; done",
                                NULL });
    spec_init(&s[1], TN_H_STREAM, "stubborn",
              (const char *[]){ "sh", "-c", "trap '' TERM; echo $$; while :; do sleep 0.05; done", NULL });
    /* The leader obeys SIGTERM, its child ignores it: once the leader is
     * reaped the rest of the group gets SIGKILL. */
    spec_init(&s[2], TN_H_STREAM, "family",
              (const char *[]){ "sh", "-c",
                                "trap 'exit 0' TERM; (trap '' TERM; exec sleep 30) & echo $!; "
                                "while :; do sleep 0.05; done",
                                NULL });
    for (int i = 0; i < 3; i++)
        s[i].c.stderr_mode = TN_STDERR_DISCARD; /* "Terminated" */
    char err[512];
    assert_int_equal(apply(f, s, 3, err, sizeof(err)), 0);
    tn_handler *hp = tn_registry_find(f->reg, "polite"), *hs = tn_registry_find(f->reg, "stubborn");
    tn_handler *hf = tn_registry_find(f->reg, "family");
    fsess *a = fs_new(1), *b = fs_new(2), *c = fs_new(3);
    assert_int_equal(say(hp, a, "x"), TN_SILENT);
    assert_int_equal(say(hs, b, "x"), TN_SILENT);
    assert_int_equal(say(hf, c, "x"), TN_SILENT);
    assert_true(run_until(f, pid_line, a, 3000));
    assert_true(run_until(f, pid_line, b, 3000));
    assert_true(run_until(f, pid_line, c, 3000));
    pid_t pa = (pid_t)atoi(a->lines[0]), pb = (pid_t)atoi(b->lines[0]), pc = (pid_t)atoi(c->lines[0]);
    assert_true(pa > 0 && pb > 0 && pc > 0);
    assert_int_equal(kill(pa, 0), 0);
    int64_t t0 = now_ms();
    fs_end(a);
    fs_end(b);
    fs_end(c);
    /* SIGTERM first */
    assert_true(run_until(f, pid_gone, (void *)(intptr_t)pa, 1000));
    /* the child ignoring SIGTERM went with its leader (it comes back to
     * us, the subreaper, as a zombie to reap) */
    int64_t end = now_ms() + 1000;
    while (kill(pc, 0) == 0 && now_ms() < end) {
        run_for(f, 10);
        while (waitpid(-1, NULL, WNOHANG) > 0) {
        }
    }
    assert_int_equal(kill(pc, 0), -1);
    /* SIGKILL for the one ignoring SIGTERM, after the grace period */
    run_for(f, 1000 - (int)(now_ms() - t0));
    assert_int_equal(kill(pb, 0), 0);
    /* it outlived the SIGTERM above; SIGKILL ends it (3 s only bounds the wait) */
    assert_true(run_until(f, pid_gone, (void *)(intptr_t)pb, 3000));
    assert_true(run_until(f, handler_idle, hp, 1000));
    assert_true(run_until(f, handler_idle, hs, 1000));
    assert_true(run_until(f, handler_idle, hf, 1000));
}

static void test_stream_errors(void **state)
{
    fx *f = *state;
    char prog[256], want[320];
    snprintf(prog, sizeof(prog), "%s/prog", f->dir);
    write_script(prog, "exec cat");
    spec s;
    spec_init(&s, TN_H_STREAM, "s", (const char *[]){ prog, NULL });
    tn_handler *h = add(f, &s);
    reply r;
    /* a front end without sessions (UDP, plain HTTP) */
    assert_int_equal(ask(h, "x", &r), TN_FAIL);
    expect(&r, TN_FAIL, "stream handlers need a connection");
    free(r.data);
    /* attach fails: the reason comes back, nothing stays attached */
    assert_int_equal(unlink(prog), 0);
    fsess *a = fs_new(1);
    assert_int_equal(send_to(h, &a->s, "x", 1, &r), TN_FAIL);
    snprintf(want, sizeof(want), "cannot run %s: No such file or directory", prog);
    expect(&r, TN_FAIL, want);
    free(r.data);
    assert_null(a->s.attached);
    fs_end(a);
    assert_true(handler_idle(h));
}

static void test_stream_input_overflow(void **state)
{
    fx *f = *state;
    spec s;
    spec_init(&s, TN_H_STREAM, "deaf", (const char *[]){ "sleep", "10", NULL });
    s.c.max_output = 4096;
    tn_handler *h = add(f, &s);
    fsess *a = fs_new(1);
    char msg[1001];
    memset(msg, 'm', 1000);
    msg[1000] = '\0';
    /* the pipe takes 64 KiB, then input piles up in our buffer */
    for (int i = 0; i < 300 && !a->closes; i++) {
        assert_int_equal(say(h, a, msg), TN_SILENT);
        run_for(f, 1);
    }
    assert_int_equal(a->closes, 1);
    assert_string_equal(a->reason, "stream input overflow");
    fs_end(a);
    assert_true(run_until(f, handler_idle, h, 3000));
}

static void test_stream_stderr_and_line_cap(void **state)
{
    fx *f = *state;
    spec s[2];
    const char *argv[] = { "sh", "-c", "echo err >&2; printf 'abcdefghijkl\\nxy\\r\\nlast'", NULL };
    spec_init(&s[0], TN_H_STREAM, "client", argv);
    s[0].c.stderr_mode = TN_STDERR_CLIENT;
    s[0].c.max_output = 8;
    spec_init(&s[1], TN_H_STREAM, "discard", argv);
    s[1].c.stderr_mode = TN_STDERR_DISCARD;
    s[1].c.max_output = 8;
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    fsess *a = fs_new(1), *b = fs_new(2);
    assert_int_equal(say(tn_registry_find(f->reg, "client"), a, "x"), TN_SILENT);
    assert_int_equal(say(tn_registry_find(f->reg, "discard"), b, "x"), TN_SILENT);
    assert_true(run_until(f, closed, a, 3000));
    assert_true(run_until(f, closed, b, 3000));
    assert_int_equal(a->n, 4);
    assert_true(has_line(a, "err"));
    assert_true(has_line(a, "abcdefgh")); /* cut at max_output */
    assert_true(has_line(a, "xy"));
    assert_true(has_line(a, "last")); /* unterminated at EOF */
    assert_int_equal(b->n, 3);
    assert_false(has_line(b, "err"));
    assert_string_equal(b->lines[0], "abcdefgh");
    assert_string_equal(b->lines[1], "xy");
    assert_string_equal(b->lines[2], "last");
    fs_end(a);
    fs_end(b);
}

/* At exit the registry destroys handlers that are still busy: a running
 * exec job ends with an error (exactly once), queued ones too, and every
 * process, a stream process in its kill grace included, is gone. */
static void test_registry_free_busy(void **state)
{
    fx *f = *state;
    spec s[2];
    spec_init(&s[0], TN_H_EXEC, "nap", (const char *[]){ "sleep", "10", NULL });
    s[0].c.max_concurrency = 1;
    spec_init(&s[1], TN_H_STREAM, "stubborn",
              (const char *[]){ "sh", "-c", "trap '' TERM; echo $$; while :; do sleep 0.05; done", NULL });
    char err[512];
    assert_int_equal(apply(f, s, 2, err, sizeof(err)), 0);
    tn_handler *he = tn_registry_find(f->reg, "nap"), *hs = tn_registry_find(f->reg, "stubborn");
    reply r[2];
    assert_int_equal(ask(he, "", &r[0]), TN_LATER);
    assert_int_equal(ask(he, "", &r[1]), TN_LATER);
    fsess *a = fs_new(1);
    assert_int_equal(say(hs, a, "x"), TN_SILENT);
    assert_true(run_until(f, pid_line, a, 3000));
    pid_t pid = (pid_t)atoi(a->lines[0]);
    fs_end(a); /* SIGTERM ignored: the process is in its 2 s grace */
    int64_t t0 = now_ms();
    tn_registry_free(f->reg, 100);
    f->reg = NULL;
    assert_true(now_ms() - t0 < 1500);
    expect(&r[0], TN_FAIL, "shutting down");
    expect(&r[1], TN_FAIL, "shutting down");
    assert_int_equal(kill(pid, 0), -1);
    free_replies(r, 2);
}

int main(void)
{
    /* as the daemon does; and orphans come back to us (see the top) */
    signal(SIGPIPE, SIG_IGN);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_exec_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_exit_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout_kills_group, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_timeout_escaped_descendant, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_waits_for_exit_and_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_child_hygiene, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_max_output, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_concurrency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_cancel, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_spawn_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_env_cwd, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_stderr_modes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exec_large_payload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_exit_closes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_detach_kills, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_input_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stream_stderr_and_line_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_free_busy, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* SPDX-License-Identifier: MIT */
/* test_http_pool.c - the batch in which a proxy handler's requests leave
 * for their upstreams at the end of the loop pass (src/upstream/http_pool.c):
 * they leave in the order they were queued, each connection's write
 * callback runs once its request is out, and a callback that drops the
 * last reference to the handler owning the batch (a handler a reload
 * retired, ending its last exchange) does not pull the batch out from
 * under the flush (ASan: make test SANITIZE=1). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>

#include "handlers/handler.h"
#include "state.h"
#include "upstream/http_pool.h"

#define NCONNS 3

typedef struct {
    tn_up_batch batch;
    bool *destroyed;
} fake_state;

static void fake_destroy(tn_handler *h)
{
    fake_state *st = h->state;
    tn_up_batch_stop(&st->batch);
    *st->destroyed = true;
    free(st);
}

static const tn_handler_ops fake_ops = { .destroy = fake_destroy };

typedef struct {
    struct event_base *base;
    tn_daemon d;
    tn_handler *h;
    bool destroyed;
    tn_up_conn uc[NCONNS];
    int peer[NCONNS];
    int order[2 * NCONNS], written; /* which connections' write callbacks ran, in turn */
    tn_handler *drop_in_callback; /* unref'd by the first write callback */
} fixture;

static void on_written(struct bufferevent *bev, void *arg)
{
    fixture *f = arg;
    for (int i = 0; i < NCONNS; i++)
        if (f->uc[i].bev == bev && f->written < 2 * NCONNS)
            f->order[f->written++] = i;
    if (f->drop_in_callback) {
        tn_handler *h = f->drop_in_callback;
        f->drop_in_callback = NULL;
        tn_handler_unref(h);
    }
}

/* The loop would run the jobs at the end of its pass; the tests call
 * tn_before_sleep_run() themselves. */
static void end_of_pass(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what, (void)arg;
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->base = event_base_new();
    f->d.base = f->base;
    f->d.before_sleep_ev = event_new(f->base, -1, 0, end_of_pass, NULL);
    f->h = calloc(1, sizeof(*f->h));
    f->h->name = strdup("px");
    f->h->ops = &fake_ops;
    f->h->daemon = &f->d;
    f->h->base = f->base;
    f->h->refs = 1;
    fake_state *st = calloc(1, sizeof(*st));
    st->destroyed = &f->destroyed;
    f->h->state = st;
    tn_up_batch_start(&st->batch, f->h);
    for (int i = 0; i < NCONNS; i++) {
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        evutil_make_socket_nonblocking(sv[0]);
        f->uc[i].fd = sv[0];
        f->uc[i].bev = bufferevent_socket_new(f->base, sv[0], BEV_OPT_CLOSE_ON_FREE);
        f->uc[i].writecb = on_written;
        f->uc[i].cbarg = f;
        f->peer[i] = sv[1];
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    if (!f->destroyed)
        tn_handler_unref(f->h);
    for (int i = 0; i < NCONNS; i++) {
        bufferevent_free(f->uc[i].bev);
        close(f->peer[i]);
    }
    event_free(f->d.before_sleep_ev);
    event_base_free(f->base);
    free(f);
    return 0;
}

static tn_up_batch *batch_of(fixture *f)
{
    return &((fake_state *)f->h->state)->batch;
}

static void queue(fixture *f, int i, const char *request)
{
    evbuffer_add(bufferevent_get_output(f->uc[i].bev), request, strlen(request));
    tn_http_pool_send(batch_of(f), &f->uc[i]);
}

static void assert_received(fixture *f, int i, const char *want)
{
    char got[64] = "";
    ssize_t n = recv(f->peer[i], got, sizeof(got) - 1, MSG_DONTWAIT);
    assert_int_equal(n, (ssize_t)strlen(want));
    assert_string_equal(got, want);
}

/* Nothing leaves before the end of the pass; then all of it, first queued
 * first, and a connection queued twice in a pass goes once. */
static void test_requests_leave_at_the_end_of_the_pass_in_queue_order(void **state)
{
    fixture *f = *state;
    queue(f, 2, "GET /c");
    queue(f, 0, "GET /a");
    queue(f, 1, "GET /b");
    queue(f, 2, " more");
    char none[8];
    assert_int_equal(recv(f->peer[2], none, sizeof(none), MSG_DONTWAIT), -1);
    tn_before_sleep_run(&f->d);
    assert_int_equal(f->written, NCONNS);
    assert_int_equal(f->order[0], 2);
    assert_int_equal(f->order[1], 0);
    assert_int_equal(f->order[2], 1);
    assert_received(f, 0, "GET /a");
    assert_received(f, 1, "GET /b");
    assert_received(f, 2, "GET /c more");
    assert_null(batch_of(f)->first);
    /* the next pass's batch starts empty and keeps its own order */
    queue(f, 1, "GET /d");
    queue(f, 0, "GET /e");
    tn_before_sleep_run(&f->d);
    assert_int_equal(f->written, NCONNS + 2);
    assert_int_equal(f->order[NCONNS], 1);
    assert_int_equal(f->order[NCONNS + 1], 0);
    assert_received(f, 1, "GET /d");
    assert_received(f, 0, "GET /e");
}

/* The first write callback ends the handler's last reference: the flush
 * still sends the other two (the batch lives until it is done), and the
 * handler, its batch and its end-of-pass job go after it. */
static void test_a_write_callback_that_drops_the_handler_does_not_end_the_flush(void **state)
{
    fixture *f = *state;
    queue(f, 0, "GET /a");
    queue(f, 1, "GET /b");
    queue(f, 2, "GET /c");
    f->drop_in_callback = f->h;
    tn_before_sleep_run(&f->d);
    assert_true(f->destroyed);
    assert_int_equal(f->written, NCONNS);
    assert_received(f, 0, "GET /a");
    assert_received(f, 1, "GET /b");
    assert_received(f, 2, "GET /c");
    assert_null(f->d.before_sleep);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_requests_leave_at_the_end_of_the_pass_in_queue_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_a_write_callback_that_drops_the_handler_does_not_end_the_flush, setup,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

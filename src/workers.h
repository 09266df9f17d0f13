/* SPDX-License-Identifier: MIT */
/* workers.h - a worker process's side of daemon.workers > 1: its link to the
 * master (the message channel, its slot's listening sockets, connection ids)
 * and the counters all workers share (the daemon-wide connection caps). */
#ifndef TN_WORKERS_H
#define TN_WORKERS_H

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "state.h"

/* Connection ids carry the worker's serial number (unique for the master's
 * life, restarts included) above this bit, so that ids stay unique across
 * workers and the master knows which worker has a connection. */
#define TN_WORKER_ID_SHIFT 40

/* Messages between master and workers over their socketpair: a header, then
 * LEN bytes. SEQ pairs a command with its answer. */
enum tn_wmsg {
    TN_WMSG_READY = 1, /* worker -> master: serving */
    TN_WMSG_CMD,       /* master -> worker: a control command line */
    TN_WMSG_ANSWER,    /* worker -> master: its answer */
    TN_WMSG_DRAIN,     /* master -> worker: replaced by a reload, drain and exit */
    TN_WMSG_RELAY,     /* worker -> master: a room message, "HANDLER\0payload" */
    TN_WMSG_DELIVER,   /* master -> worker: the same for its local members */
    TN_WMSG_QUERY,     /* worker -> master: "metrics" for the whole daemon; ANSWER back */
    TN_WMSG_CMD_LOCAL, /* as CMD, but what it would publish to other machines stays here */
    TN_WMSG_RELOAD,    /* master -> worker: apply a config in place; ANSWER: "" or the error */
};

/* A reload's payload: this header, then the config snapshot (YAML text,
 * tn_config_snapshot()). The sockets of NFDS new listeners come before it on
 * the descriptor channel, each message a tn_wfd_msg with its descriptors. */
typedef struct tn_wreload_hdr {
    uint32_t nfds;
} tn_wreload_hdr;

#define TN_WFD_BATCH 64
typedef struct tn_wfd_msg {
    uint32_t n;
    uint32_t listener[TN_WFD_BATCH]; /* index in the new config's listeners */
} tn_wfd_msg;

typedef struct tn_wmsg_hdr {
    uint32_t len;
    uint32_t type;
    uint64_t seq;
} tn_wmsg_hdr;

#define TN_WMSG_MAX (256u * 1024 * 1024)
/* Room messages are not queued to a peer that has more than this unread. */
#define TN_WMSG_QUEUE_CAP (64u * 1024 * 1024)

/* Queues one message on BEV. */
void tn_wmsg_send(struct bufferevent *bev, int type, uint64_t seq, const void *data, size_t len);
/* The next whole message in IN: its header, and its payload moved to BODY.
 * 0: none complete yet; -1: a malformed stream. */
int tn_wmsg_next(struct evbuffer *in, tn_wmsg_hdr *hdr, struct evbuffer *body);

/* ---- shared counters ---------------------------------------------------------- */

typedef struct tn_wshm tn_wshm;

/* A segment mapped before the workers are forked, for SEATS live workers at
 * once (a seat is freed when its worker exits). NULL on failure. */
tn_wshm *tn_wshm_new(int seats);
void tn_wshm_free(tn_wshm *shm);
/* Forgets what the worker on SEAT counted (it exited: its connections are gone). */
void tn_wshm_clear_seat(tn_wshm *shm, int seat);

/* ---- the worker's link -------------------------------------------------------- */

typedef struct tn_worker_socket {
    const tn_listener_conf *conf; /* in the config the worker was forked with */
    int fd;                       /* -1 once a listener took it */
} tn_worker_socket;

/* Takes FD (the channel to the master), FDCH (the descriptor channel: a
 * SOCK_SEQPACKET socket that carries listening sockets by SCM_RIGHTS) and
 * SOCKETS (moved). */
tn_worker_link *tn_workers_link_new(int fd, int fdch, int slot, int seat, uint64_t serial, tn_wshm *shm,
                                    tn_worker_socket *sockets, size_t nsockets);
/* The master's side: sends FDS[i] for listener LISTENER[i] over FDCH.
 * -1 with errno when the channel is full or broken. */
int tn_workers_send_fds(int fdch, const uint32_t *listener, const int *fds, size_t n);
void tn_workers_free(tn_worker_link *w);

/* The first connection id of a worker (0 for the single process). */
uint64_t tn_workers_first_id(const tn_worker_link *w);
/* The listening socket the master made for CONF in this worker's slot, -1 if none. */
int tn_workers_take_socket(tn_worker_link *w, const tn_listener_conf *conf);
/* What the master's messages ask of the layers above: the daemon gives
 * these at start, so that this module (reached from net/ for the shared
 * counters) includes neither the daemon nor the control socket. */
typedef struct tn_worker_hooks {
    /* a control command; true when its answer goes to LATER(ARG, ANSWER) instead of OUT */
    bool (*exec)(tn_daemon *d, char *line, size_t len, struct evbuffer *out,
                 void (*later)(void *arg, struct evbuffer *answer), void *arg);
    void (*drain)(tn_daemon *d);
    void (*shutdown)(tn_daemon *d, const char *why);
    /* applies CFG (taken) in place, all or nothing; -1 with err: nothing changed */
    int (*reload)(tn_daemon *d, tn_config *cfg, char *err, size_t errlen);
} tn_worker_hooks;
/* The daemon is serving: watch the channel and tell the master. */
int tn_workers_started(tn_daemon *d, const tn_worker_hooks *hooks, char *err, size_t errlen);

/* May one more connection open under daemon.max_connections (MAX), for the
 * whole daemon? In a worker the place is reserved until the connection
 * counts itself or tn_workers_publish() gives it back (refused after all). */
bool tn_workers_admit(tn_daemon *d, int64_t max);
/* Tells the other workers this process's count of open connections. */
void tn_workers_publish(tn_daemon *d);
/* Per client address and listener, for the whole daemon: admit counts the
 * connection unless MAX (0: no cap) are open already; release uncounts it. */
bool tn_workers_ip_admit(tn_daemon *d, const char *listener, const struct sockaddr *sa, int64_t max);
void tn_workers_ip_release(tn_daemon *d, const char *listener, const struct sockaddr *sa);

/* The metrics handler's answer for the whole daemon: asks the master, and
 * completes CALL's job with its answer. False: not a worker, answer locally. */
bool tn_workers_metrics(tn_daemon *d, tn_call *call);

/* Is connection ID this process's (a worker's own serial; always in the
 * single process)? */
bool tn_workers_owns_id(const tn_daemon *d, uint64_t id);
/* The daemon's process id for others to see: the master's in a worker. */
long tn_workers_daemon_pid(const tn_daemon *d);
/* True while a worker runs a command another worker publishes ([cluster]). */
bool tn_workers_local_only(const tn_daemon *d);

/* A room message to the members in the other workers (through the master). */
void tn_workers_relay(tn_daemon *d, const char *handler, const void *payload, size_t len);

#endif

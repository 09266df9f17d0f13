/* udp.h - the UDP front end: one datagram in, one datagram back. */
#ifndef TN_PROTO_UDP_H
#define TN_PROTO_UDP_H

#include <stddef.h>

typedef struct tn_listener tn_listener;

int tn_udp_start(tn_listener *l, char *err, size_t errlen);
void tn_udp_stop(tn_listener *l);
void tn_udp_free(tn_listener *l);
/* Replies still owed to peers (shutdown waits for them). */
size_t tn_udp_in_flight(const tn_listener *l);

#endif

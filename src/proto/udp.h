/* SPDX-License-Identifier: MIT */
/* udp.h - the UDP front end: one datagram in, one datagram back. */
#ifndef TN_PROTO_UDP_H
#define TN_PROTO_UDP_H

#include "net/proto_ops.h"

extern const tn_proto_ops tn_udp_proto;

#endif

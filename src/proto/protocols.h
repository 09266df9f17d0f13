/* SPDX-License-Identifier: MIT */
/* protocols.h - the front end serving each configured protocol. */
#ifndef TN_PROTO_PROTOCOLS_H
#define TN_PROTO_PROTOCOLS_H

#include "net/proto_ops.h"

/* The ops for PROTOCOL (enum tn_protocol), NULL for none. */
const tn_proto_ops *tn_proto_ops_for(int protocol);

#endif

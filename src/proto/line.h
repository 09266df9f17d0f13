/* SPDX-License-Identifier: MIT */
/* line.h - the TCP line-protocol front end. */
#ifndef TN_PROTO_LINE_H
#define TN_PROTO_LINE_H

#include "net/proto_ops.h"

extern const tn_proto_ops tn_line_proto;

#endif

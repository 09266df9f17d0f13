/* SPDX-License-Identifier: MIT */
/* protocols.c - maps a listener's configured protocol to its front end:
 * the one place that lists them, so that the listener only holds a table. */
#include "proto/protocols.h"

#include "config/config.h"
#include "proto/http.h"
#include "proto/line.h"
#include "proto/udp.h"

const tn_proto_ops *tn_proto_ops_for(int protocol)
{
    switch (protocol) {
    case TN_PROTO_TCP:
        return &tn_line_proto;
    case TN_PROTO_UDP:
        return &tn_udp_proto;
    case TN_PROTO_HTTP:
        return &tn_http_proto;
    }
    return NULL;
}

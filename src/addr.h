/* SPDX-License-Identifier: MIT */
/* addr.h - socket addresses as text. */
#ifndef TN_ADDR_H
#define TN_ADDR_H

#include <stddef.h>
#include <sys/socket.h>

/* "ip:port", "[v6]:port" (IPv4-mapped IPv6 shown as IPv4), "unix" or "?". */
void tn_addr_format(const struct sockaddr *sa, char *buf, size_t len);

#endif

/* SPDX-License-Identifier: MIT */
/* wshandshake.c - the WebSocket endpoint's checks of an upgrade request
 * (key, version, Origin, what libwebsockets can hold) and the head lws gets
 * (the subprotocol chosen here, permessage-deflate left out where it is
 * off). The HTTP layer has told it is an upgrade (tn_http_is_ws_upgrade()). */
#include "proto/wshandshake.h"

#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "net/lwsdrv.h"
#include "proto/http_msg.h"

/* "https://host:port" -> "host:port" */
static const char *origin_host(const char *origin)
{
    const char *p = strstr(origin, "://");
    return p ? p + 3 : origin;
}

static bool origin_allowed(const tn_ws_conf *ep, const char *origin, const char *host)
{
    if (!ep->origins.n || !origin)
        return true; /* no list, or not a browser */
    for (size_t i = 0; i < ep->origins.n; i++) {
        const char *o = ep->origins.v[i];
        if (strcmp(o, "*") == 0)
            return true;
        if (strcasecmp(o, "same") == 0) {
            if (host && strcasecmp(origin_host(origin), host) == 0)
                return true;
            continue;
        }
        size_t ol = strlen(o);
        while (ol && o[ol - 1] == '/')
            ol--;
        size_t gl = strlen(origin);
        while (gl && origin[gl - 1] == '/')
            gl--;
        if (ol == gl && strncasecmp(o, origin, ol) == 0)
            return true;
        if (!strstr(o, "://") && strcasecmp(origin_host(origin), o) == 0)
            return true;
    }
    return false;
}

/* RFC 6455 4.1: a nonce of 16 bytes in base64, so 22 characters (the last
 * of which carries 2 bits of the nonce and 4 zero bits) and "==". */
static bool key_valid(const char *key)
{
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (strlen(key) != 24 || strcmp(key + 22, "==") != 0)
        return false;
    for (size_t i = 0; i < 22; i++) {
        const char *p = key[i] ? strchr(b64, key[i]) : NULL;
        if (!p || (i == 21 && (p - b64) % 16))
            return false;
    }
    return true;
}

/* Whether lws can hold the head (TN_LWS_HEAD_MAX of header data, which holds
 * less than the head's own bytes): lws drops a handshake it cannot hold
 * without a word, so the HTTP layer answers 431 instead. */
static bool head_fits(const struct tn_http_request *r)
{
    size_t n = strlen(r->method) + strlen(r->target) + 12;
    for (size_t i = 0; i < r->nheaders; i++)
        n += strlen(r->headers[i].name) + strlen(r->headers[i].value) + 4;
    return n < TN_LWS_HEAD_MAX;
}

int tn_ws_check(const tn_ws_conf *ep, const struct tn_http_request *r)
{
    const char *key = tn_http_header_get(r, "Sec-WebSocket-Key");
    const char *ver = tn_http_header_get(r, "Sec-WebSocket-Version");
    if (!head_fits(r))
        return 431;
    if (!key || !key_valid(key) || !ver || strcmp(ver, "13") != 0 || r->http_major != 1 || r->http_minor < 1)
        return 400;
    if (!origin_allowed(ep, tn_http_header_get(r, "Origin"), tn_http_header_get(r, "Host")))
        return 403;
    return 0;
}

size_t tn_ws_rewrite_head(const tn_ws_conf *ep, const char *head, size_t len, char *out, size_t cap, char *chosen,
                          size_t chosen_len, size_t *head_len)
{
    const char *end = NULL;
    for (size_t i = 0; i + 1 < len; i++) {
        if (head[i] == '\n' && head[i + 1] == '\n') {
            end = head + i + 2;
            break;
        }
        if (head[i] == '\n' && i + 2 < len && head[i + 1] == '\r' && head[i + 2] == '\n') {
            end = head + i + 3;
            break;
        }
    }
    if (!end)
        end = head + len;
    size_t o = 0;
    const char *p = head;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *le = nl ? nl + 1 : end;
        size_t ll = (size_t)(le - p);
        bool skip = false;
        if (!ep->deflate && ll > 25 && strncasecmp(p, "Sec-WebSocket-Extensions:", 25) == 0)
            skip = true;
        if (ll > 23 && strncasecmp(p, "Sec-WebSocket-Protocol:", 23) == 0) {
            skip = true;
            /* keep the first offered name the endpoint speaks */
            char val[512];
            size_t vl = ll - 23 < sizeof(val) - 1 ? ll - 23 : sizeof(val) - 1;
            memcpy(val, p + 23, vl);
            val[vl] = '\0';
            for (char *s = val, *tok; (tok = strtok_r(s, ", \t\r\n", &s));)
                for (size_t i = 0; i < ep->subprotocols.n; i++)
                    if (strcmp(tok, ep->subprotocols.v[i]) == 0 && !*chosen) {
                        snprintf(chosen, chosen_len, "%s", tok);
                        goto chosen;
                    }
        chosen:;
        }
        if (!skip && o + ll < cap) {
            memcpy(out + o, p, ll);
            o += ll;
        }
        p = le;
    }
    /* whatever followed the head is WebSocket data: unchanged */
    *head_len = o;
    size_t rest = (size_t)(head + len - end);
    if (o + rest <= cap) {
        memcpy(out + o, end, rest);
        o += rest;
    }
    return o;
}


/* SPDX-License-Identifier: MIT */
/* dump.c - a loaded config back out as values: the normalized tree every
 * default filled in (--dump-config, the control socket's `config`), the
 * Markdown reference of every key (the README's, generated), and settings
 * copied and compared field by field (a handler's, the cluster's), and the
 * names of the types and protocols. All walk the schema table, as loading
 * does. */
#include "config/config.h"

#include <stdlib.h>
#include <string.h>

#include "config/schema.h"
#include "config/yaml.h"

/* ---- names ---------------------------------------------------------------- */

const char *tn_handler_type_name(int type)
{
    static const char *const names[] = { "echo", "static", "exec", "stream", "broadcast", "health",
                                         "metrics", "file", "redirect", "proxy", "plugin", "worker" };
    return type >= 0 && type < (int)(sizeof(names) / sizeof(names[0])) ? names[type] : "?";
}

const char *tn_middleware_type_name(int type)
{
    static const char *const names[] = { "cors", "gzip", "auth", "rate_limit", "access_log", "headers" };
    return type >= 0 && type < (int)(sizeof(names) / sizeof(names[0])) ? names[type] : "?";
}

const char *tn_protocol_name(int protocol)
{
    static const char *const names[] = { "tcp", "udp", "http" };
    return protocol >= 0 && protocol < 3 ? names[protocol] : "?";
}

static tn_pos nopos(void)
{
    return (tn_pos){ NULL, 0, 0 };
}

static void add(tn_value *obj, const char *key, tn_value *v)
{
    if (v)
        tn_object_add(obj, strdup(key), nopos(), v);
}

/* Rows of SCOPE applying to TNAME, in table order. With PARENT, only fields
 * that differ from it (used for limits inherited by routes and endpoints). */
static void dump_scope(tn_value *obj, const char *scope, const char *tname, const void *base, const void *parent)
{
    for (size_t i = 0; i < tn_schema_len; i++) {
        const tn_key *k = &tn_schema[i];
        if (!tn_key_applies(k, scope, tname) || k->type >= TN_T_ROUTES)
            continue;
        if (parent && tn_field_equal(k, base, parent))
            continue;
        tn_value *v = tn_field_value(k, base);
        if ((k->flags & TN_K_OPTIONAL) && v && v->type == TN_V_ARRAY && v->u.a.len == 0) {
            tn_value_free(v);
            continue;
        }
        add(obj, k->key, v);
    }
}

static tn_value *to_value(const tn_config *cfg, bool secrets)
{
    tn_value *root = tn_value_new(TN_V_OBJECT, nopos());
    if (!root)
        return NULL;
    tn_value *v = tn_value_new(TN_V_OBJECT, nopos());
    dump_scope(v, "daemon", NULL, &cfg->daemon, NULL);
    add(root, "daemon", v);
    v = tn_value_new(TN_V_OBJECT, nopos());
    dump_scope(v, "limits", NULL, &cfg->limits, NULL);
    add(root, "limits", v);

    tn_value *hs = tn_value_new(TN_V_OBJECT, nopos());
    for (size_t i = 0; i < cfg->nhandlers; i++) {
        const tn_handler_conf *h = &cfg->handlers[i];
        tn_value *o = tn_value_new(TN_V_OBJECT, nopos());
        dump_scope(o, "handler", tn_handler_type_name(h->type), h, NULL);
        add(hs, h->name, o);
    }
    add(root, "handlers", hs);

    tn_value *ms = tn_value_new(TN_V_OBJECT, nopos());
    for (size_t i = 0; i < cfg->nmiddleware; i++) {
        const tn_middleware_conf *m = &cfg->middleware[i];
        tn_value *o = tn_value_new(TN_V_OBJECT, nopos());
        dump_scope(o, "middleware", tn_middleware_type_name(m->type), m, NULL);
        add(ms, m->name, o);
    }
    add(root, "middleware", ms);

    tn_value *ls = tn_value_new(TN_V_OBJECT, nopos());
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const tn_listener_conf *li = &cfg->listeners[i];
        tn_value *o = tn_value_new(TN_V_OBJECT, nopos());
        dump_scope(o, "listener", tn_protocol_name(li->protocol), li, NULL);
        dump_scope(o, "limits", NULL, &li->limits, NULL);
        if (li->tls) {
            tn_value *t = tn_value_new(TN_V_OBJECT, nopos());
            dump_scope(t, "tls", NULL, li->tls, NULL);
            if (li->tls->nsni) {
                tn_value *sn = tn_value_new(TN_V_OBJECT, nopos());
                for (size_t s = 0; s < li->tls->nsni; s++) {
                    tn_value *so = tn_value_new(TN_V_OBJECT, nopos());
                    dump_scope(so, "sni", NULL, &li->tls->sni[s], NULL);
                    add(sn, li->tls->sni[s].name, so);
                }
                add(t, "sni", sn);
            }
            add(o, "tls", t);
        }
        if (li->protocol == TN_PROTO_HTTP) {
            tn_value *rs = tn_value_new(TN_V_OBJECT, nopos());
            for (size_t r = 0; r < li->nroutes; r++) {
                tn_value *ro = tn_value_new(TN_V_OBJECT, nopos());
                dump_scope(ro, "route", NULL, &li->routes[r], NULL);
                dump_scope(ro, "limits", NULL, &li->routes[r].limits, &li->limits);
                add(rs, li->routes[r].spec, ro);
            }
            add(o, "routes", rs);
            tn_value *ws = tn_value_new(TN_V_OBJECT, nopos());
            for (size_t w = 0; w < li->nwebsocket; w++) {
                tn_value *wo = tn_value_new(TN_V_OBJECT, nopos());
                dump_scope(wo, "websocket", NULL, &li->websocket[w], NULL);
                dump_scope(wo, "limits", NULL, &li->websocket[w].limits, &li->limits);
                add(ws, li->websocket[w].path, wo);
            }
            add(o, "websocket", ws);
        }
        add(ls, li->name, o);
    }
    add(root, "listeners", ls);
    if (cfg->cluster.redis) {
        /* the dump is readable by control-socket readers: the secret is not */
        tn_cluster_conf shown = cfg->cluster;
        if (!secrets && shown.password && *shown.password)
            shown.password = (char *)"(hidden)";
        v = tn_value_new(TN_V_OBJECT, nopos());
        dump_scope(v, "cluster", NULL, &shown, NULL);
        add(root, "cluster", v);
    }
    return root;
}

tn_value *tn_config_to_value(const tn_config *cfg)
{
    return to_value(cfg, false);
}

int tn_config_snapshot(const tn_config *cfg, char **text, size_t *len)
{
    tn_value *v = to_value(cfg, true);
    int rc = v ? tn_yaml_emit_string(v, text, len) : -1;
    tn_value_free(v);
    return rc;
}

tn_config *tn_config_from_snapshot(const char *text, size_t len, const char *path, tn_diag *diag)
{
    tn_doc doc = { 0 };
    if (tn_yaml_load_string(&doc, "<reload snapshot>", text, len, diag) < 0) {
        tn_doc_free(&doc);
        return NULL;
    }
    return tn_config_from_doc(&doc, path, diag);
}

int tn_config_dump(const tn_config *cfg, FILE *out)
{
    tn_value *v = tn_config_to_value(cfg);
    if (!v)
        return -1;
    int rc = tn_yaml_emit_file(v, out);
    tn_value_free(v);
    return rc;
}

/* ---- reference ------------------------------------------------------------ */

static void md_escape(FILE *out, const char *s)
{
    for (; *s; s++) {
        if (*s == '|')
            fputs("\\|", out);
        else
            fputc(*s, out);
    }
}

void tn_config_reference(FILE *out)
{
    static const struct { const char *scope; const char *title; const char *intro; } parts[] = {
        { "daemon", "`[daemon]`", "Process-wide settings." },
        { "limits", "`[limits]`",
          "Defaults for every listener. Each key may also be set in a listener, a route or a WebSocket "
          "endpoint, which then starts from its parent's values." },
        { "handler", "`[handlers]` NAME `{ ... }`", "What to do with a message. `type` selects the kind; "
          "the other keys apply to the kinds listed." },
        { "middleware", "`[middleware]` NAME `{ ... }`",
          "Named middleware for HTTP listeners and routes. A list may also name a kind directly "
          "(`middleware: [\"cors\"]`), which uses that kind's defaults." },
        { "listener", "`[listeners]` NAME `{ ... }`",
          "Where messages arrive. Every `[limits]` key is accepted too." },
        { "tls", "listener `tls { ... }`", "TLS for tcp and http listeners." },
        { "sni", "listener `tls { sni { \"name\" { ... } } }`", "Further certificates chosen by server name." },
        { "route", "listener `routes { \"METHOD /path\": ... }`",
          "A route's value is a handler name or a block with these keys (and any `[limits]` key)." },
        { "websocket", "listener `websocket { \"/path\": ... }`",
          "An endpoint's value is a handler name, a list of handler names, or a block with these keys "
          "(and any `[limits]` key)." },
        { "cluster", "`[cluster]`",
          "Broadcast rooms shared with other tusknetd instances through a Redis server (see Scaling out). "
          "Without `redis` the daemon is on its own." },
    };
    fputs("Durations are seconds or strings with a unit (`250ms`, `30s`, `5m`, `1h`, `1d`); sizes are bytes "
          "or strings with a unit (`64KB`, `1MB`, `1GB`; `KiB`/`MiB` mean the same, powers of 1024); rates "
          "are `N/s`, `N/m` or `N/h`. Relative paths are relative to the directory of the file that names "
          "them.\n",
          out);
    for (size_t p = 0; p < sizeof(parts) / sizeof(parts[0]); p++) {
        fprintf(out, "\n#### %s\n\n%s\n\n| key | type | default | applies to | meaning |\n|---|---|---|---|---|\n",
                parts[p].title, parts[p].intro);
        for (size_t i = 0; i < tn_schema_len; i++) {
            const tn_key *k = &tn_schema[i];
            if (strcmp(k->scope, parts[p].scope) != 0)
                continue;
            fprintf(out, "| `%s` | %s", k->key, tn_type_doc(k->type));
            if (k->type == TN_T_ENUM) {
                fputs(": ", out);
                for (const char *e = k->enums; *e; e++)
                    fputs(*e == '|' ? ", " : (char[]){ *e, 0 }, out);
            }
            if ((k->type == TN_T_INT || k->type == TN_T_DURATION || k->type == TN_T_SIZE) && (k->min || k->max)) {
                char lo[32], hi[32];
                tn_format_field(k->type, k->min, lo, sizeof(lo));
                tn_format_field(k->type, k->max, hi, sizeof(hi));
                fprintf(out, " (%s–%s)", lo, hi);
            }
            fputs(" | ", out);
            if (k->flags & TN_K_REQUIRED)
                fputs("required", out);
            else if (!k->def)
                fputs("—", out);
            else if (!*k->def)
                fputs("empty", out);
            else {
                fputs("`", out);
                md_escape(out, k->def);
                fputs("`", out);
            }
            fprintf(out, " | %s | ", k->only ? k->only : "all");
            md_escape(out, k->doc);
            fputs(" |\n", out);
        }
    }
}

/* ---- settings outside a config ------------------------------------------ */

int tn_handler_conf_copy(tn_handler_conf *dst, const tn_handler_conf *src)
{
    const char *tname = tn_handler_type_name(src->type);
    tn_diag d = { 0 };
    memset(dst, 0, sizeof(*dst));
    dst->name = strdup(src->name);
    dst->pos = src->pos;
    dst->command_pos = src->command_pos;
    dst->cwd_pos = src->cwd_pos;
    dst->root_pos = src->root_pos;
    dst->type = src->type;
    int rc = dst->name ? 0 : -1;
    for (size_t i = 0; i < tn_schema_len && rc == 0; i++) {
        const tn_key *k = &tn_schema[i];
        if (!tn_key_applies(k, "handler", tname) || k->off == offsetof(tn_handler_conf, type))
            continue;
        tn_value *v = tn_field_value(k, src);
        if (v && !tn_convert(&d, k, v, dst))
            rc = -1;
        tn_value_free(v);
    }
    tn_diag_free(&d);
    return rc;
}

bool tn_handler_conf_equal(const tn_handler_conf *a, const tn_handler_conf *b)
{
    if (a->type != b->type)
        return false;
    const char *tname = tn_handler_type_name(a->type);
    for (size_t i = 0; i < tn_schema_len; i++)
        if (tn_key_applies(&tn_schema[i], "handler", tname) && !tn_field_equal(&tn_schema[i], a, b))
            return false;
    return true;
}

bool tn_cluster_conf_equal(const tn_cluster_conf *a, const tn_cluster_conf *b)
{
    for (size_t i = 0; i < tn_schema_len; i++)
        if (tn_key_applies(&tn_schema[i], "cluster", NULL) && !tn_field_equal(&tn_schema[i], a, b))
            return false;
    return true;
}

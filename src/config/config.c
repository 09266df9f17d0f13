/* SPDX-License-Identifier: MIT */
/* config.c - from a parsed document to a validated struct tn_config (the
 * way back out, --dump-config and the README reference, is dump.c).
 *
 * Sections are read in a fixed order (daemon, limits, handlers, middleware,
 * listeners) whatever their order in the file, so that references to
 * handlers and middleware can be checked, with the position of the reference,
 * while the listeners are read. Everything per key goes through the schema
 * table in schema.c; this file only knows the shape of the collections. */
#include "config/config.h"

#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "config/schema.h"
#include "config/tusk.h"
#include "config/yaml.h"

typedef struct ctx {
    tn_diag *d;
    tn_config *cfg;
} ctx;

static const char *const handler_types = "echo|static|exec|stream|broadcast|health|metrics|file|redirect|proxy|plugin|worker";
static const char *const mw_types = "cors|gzip|auth|rate_limit|access_log|headers";
static const char *const sections[] = { "daemon", "limits", "handlers", "middleware", "listeners", "cluster" };
#define NSECTIONS (sizeof(sections) / sizeof(sections[0]))

static const char *type_name(const char *enums, int idx, char *buf, size_t len)
{
    return tn_enum_name(enums, idx, buf, len);
}

/* ---- paths ------------------------------------------------------------ */

/* Relative paths in a config file mean relative to that file's directory, so
 * a config behaves the same whatever directory the daemon starts in. */
static char *resolve_path(const char *file, const char *path)
{
    if (!*path || path[0] == '/' || strcmp(path, "-") == 0 || !file || file[0] == '<')
        return strdup(path);
    char *copy = strdup(file);
    if (!copy)
        return NULL;
    const char *dir = dirname(copy);
    char *out = NULL;
    if (strcmp(dir, ".") == 0) {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)))
            snprintf(cwd, sizeof(cwd), ".");
        if (asprintf(&out, "%s/%s", cwd, path) < 0)
            out = NULL;
    } else if (dir[0] != '/') {
        char cwd[PATH_MAX];
        if (!getcwd(cwd, sizeof(cwd)))
            snprintf(cwd, sizeof(cwd), ".");
        if (asprintf(&out, "%s/%s/%s", cwd, dir, path) < 0)
            out = NULL;
    } else if (asprintf(&out, "%s/%s", dir, path) < 0) {
        out = NULL;
    }
    free(copy);
    if (!out)
        return NULL;
    /* lexical clean-up: drop "." segments and fold "dir/.." */
    char *segs[PATH_MAX / 2];
    size_t n = 0;
    for (char *save = NULL, *s = strtok_r(out, "/", &save); s && n < sizeof(segs) / sizeof(segs[0]);
         s = strtok_r(NULL, "/", &save)) {
        if (strcmp(s, ".") == 0)
            continue;
        if (strcmp(s, "..") == 0) {
            if (n)
                n--;
            continue;
        }
        segs[n++] = s;
    }
    size_t len = 1;
    for (size_t i = 0; i < n; i++)
        len += strlen(segs[i]) + 1;
    char *clean = malloc(len + 1);
    if (clean) {
        char *p = clean;
        if (!n)
            *p++ = '/';
        for (size_t i = 0; i < n; i++) {
            size_t l = strlen(segs[i]);
            *p++ = '/';
            memcpy(p, segs[i], l);
            p += l;
        }
        *p = '\0';
    }
    free(out);
    return clean;
}

static bool is_path_key(const tn_key *k)
{
    static const char *const keys[] = { "control_socket", "pid_file", "cwd", "root", "path", "file" };
    if (k->type == TN_T_FILE)
        return true;
    if (k->type != TN_T_STRING)
        return false;
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        if (strcmp(k->key, keys[i]) == 0)
            return true;
    return false;
}

/* ---- generic scope application ---------------------------------------- */

static const tn_key *find_row(const char *scope, const char *key, const char *tname, bool *elsewhere)
{
    for (size_t i = 0; i < tn_schema_len; i++) {
        const tn_key *k = &tn_schema[i];
        if (strcmp(k->scope, scope) != 0 || strcmp(k->key, key) != 0)
            continue;
        if (tn_only_matches(k->only, tname))
            return k;
        if (elsewhere)
            *elsewhere = true;
    }
    return NULL;
}

static int limits_copy(tn_limits *dst, const tn_limits *src)
{
    *dst = *src;
    dst->allow = (tn_strlist){ 0 };
    dst->deny = (tn_strlist){ 0 };
    if (tn_strlist_copy(&dst->allow, &src->allow) < 0 || tn_strlist_copy(&dst->deny, &src->deny) < 0)
        return -1;
    return 0;
}

static void free_scope(const char *scope, const char *tname, void *base)
{
    for (size_t i = 0; i < tn_schema_len; i++)
        if (tn_key_applies(&tn_schema[i], scope, tname))
            tn_free_field(&tn_schema[i], base);
}

static void limits_free(tn_limits *l)
{
    free_scope("limits", NULL, l);
}

typedef bool (*nested_fn)(ctx *c, const tn_key *k, void *base, const tn_value *v);
static bool check_refs(ctx *c, const tn_key *k, const tn_value *v, const char *front);

/* Everything a scope needs besides the rows: what to call nested objects,
 * which member names the type (already read by the caller), where the
 * inherited limits live, and how handler references are checked. */
typedef struct scope_call {
    const char *scope;
    const char *tname;    /* handler type, protocol or middleware kind */
    const char *type_key; /* member already consumed by the caller */
    const char *what;     /* for messages: "handler 'x'" */
    const char *kind;     /* for "does not apply to ...": "handlers of type 'echo'" */
    const char *front;    /* for handler references: "tcp", "udp", "http", "websocket" */
    tn_limits *limits;    /* NULL: limit keys not accepted here */
    nested_fn nested;
} scope_call;

static void apply_scope(ctx *c, const scope_call *sc, void *base, const tn_value *obj)
{
    for (size_t i = 0; i < tn_schema_len; i++) {
        const tn_key *k = &tn_schema[i];
        if (!tn_key_applies(k, sc->scope, sc->tname) || (k->flags & (TN_K_REQUIRED | TN_K_OPTIONAL)))
            continue;
        tn_apply_default(c->d, k, base);
    }
    for (size_t i = 0; i < obj->u.o.len; i++) {
        const tn_member *m = &obj->u.o.items[i];
        if (sc->type_key && strcmp(m->key, sc->type_key) == 0)
            continue;
        bool elsewhere = false;
        void *target = base;
        const tn_key *k = find_row(sc->scope, m->key, sc->tname, &elsewhere);
        if (!k && sc->limits && !elsewhere) {
            k = find_row("limits", m->key, NULL, NULL);
            target = sc->limits;
        }
        if (!k) {
            if (elsewhere) {
                tn_diag_error(c->d, m->key_pos, "'%s' does not apply to %s", m->key, sc->kind ? sc->kind : sc->what);
                continue;
            }
            tn_suggest s;
            tn_suggest_init(&s, m->key);
            for (size_t j = 0; j < tn_schema_len; j++) {
                const tn_key *r = &tn_schema[j];
                if (tn_key_applies(r, sc->scope, sc->tname) || (sc->limits && strcmp(r->scope, "limits") == 0))
                    tn_suggest_add(&s, r->key);
            }
            char sug[96];
            tn_diag_error(c->d, m->key_pos, "unknown key '%s' in %s%s", m->key, sc->what,
                          tn_suggest_text(&s, sug, sizeof(sug)));
            continue;
        }
        if (k->type >= TN_T_ROUTES) {
            if (sc->nested)
                sc->nested(c, k, base, m->val);
            continue;
        }
        if (!tn_convert(c->d, k, m->val, target))
            continue;
        if (is_path_key(k)) {
            char **field = (char **)((char *)target + k->off);
            char *resolved = resolve_path(m->val->pos.file, *field);
            if (resolved) {
                free(*field);
                *field = resolved;
            }
            if (k->type == TN_T_FILE && **field && access(*field, R_OK) < 0)
                tn_diag_error(c->d, m->val->pos, "cannot read %s '%s': %s", k->key, *field, strerror(errno));
        }
        if (k->type == TN_T_HANDLER || k->type == TN_T_HANDLERS || k->type == TN_T_MIDDLEWARES)
            check_refs(c, k, m->val, sc->front);
    }
    for (size_t i = 0; i < tn_schema_len; i++) {
        const tn_key *k = &tn_schema[i];
        if (tn_key_applies(k, sc->scope, sc->tname) && (k->flags & TN_K_REQUIRED) && !tn_object_find(obj, k->key) &&
            !(sc->type_key && strcmp(k->key, sc->type_key) == 0))
            tn_diag_error(c->d, obj->pos, "%s: missing required key '%s'", sc->what, k->key);
    }
}

static const tn_value *want_object(ctx *c, const tn_value *v, const char *what)
{
    if (v->type == TN_V_OBJECT)
        return v;
    tn_diag_error(c->d, v->pos, "%s must be a block { ... }, not %s", what, tn_vtype_name(v->type));
    return NULL;
}

/* Reads the member naming the object's type ("type", "protocol"); -1 when
 * missing or wrong (already reported). */
static int read_type(ctx *c, const tn_value *obj, const char *scope, const char *key, const char *what, void *base)
{
    const tn_member *m = tn_object_find(obj, key);
    if (!m) {
        tn_diag_error(c->d, obj->pos, "%s: missing required key '%s'", what, key);
        return -1;
    }
    const tn_key *k = find_row(scope, key, NULL, NULL);
    if (!tn_convert(c->d, k, m->val, base))
        return -1;
    return *(int *)((char *)base + k->off);
}

/* ---- references --------------------------------------------------------- */

static bool http_only(int type)
{
    return type == TN_H_HEALTH || type == TN_H_METRICS || type == TN_H_FILE || type == TN_H_REDIRECT;
}

static void check_one_ref(ctx *c, const tn_key *k, const tn_value *v, const char *front)
{
    if (v->type != TN_V_STRING)
        return;
    const char *name = v->u.s.ptr;
    if (k->type == TN_T_MIDDLEWARES) {
        for (size_t i = 0; i < c->cfg->nmiddleware; i++)
            if (strcmp(c->cfg->middleware[i].name, name) == 0)
                return;
        if (tn_enum_index(mw_types, name) >= 0)
            return;
        tn_suggest s;
        tn_suggest_init(&s, name);
        for (size_t i = 0; i < c->cfg->nmiddleware; i++)
            tn_suggest_add(&s, c->cfg->middleware[i].name);
        char buf[32];
        for (int i = 0; tn_enum_name(mw_types, i, buf, sizeof(buf))[0] != '?'; i++)
            tn_suggest_add(&s, buf);
        char sug[96];
        tn_diag_error(c->d, v->pos, "undefined middleware '%s'%s", name, tn_suggest_text(&s, sug, sizeof(sug)));
        return;
    }
    const tn_handler_conf *h = tn_config_handler(c->cfg, name);
    if (!h) {
        tn_suggest s;
        tn_suggest_init(&s, name);
        for (size_t i = 0; i < c->cfg->nhandlers; i++)
            tn_suggest_add(&s, c->cfg->handlers[i].name);
        char sug[96];
        tn_diag_error(c->d, v->pos, "undefined handler '%s'%s", name, tn_suggest_text(&s, sug, sizeof(sug)));
        return;
    }
    if (strcmp(front, "http") != 0 && http_only(h->type))
        tn_diag_error(c->d, v->pos, "handler '%s' (type %s) only serves HTTP routes, not %s", name,
                      tn_handler_type_name(h->type), front);
    else if (strcmp(front, "http") == 0 && h->type == TN_H_STREAM)
        tn_diag_error(c->d, v->pos, "handler '%s' (type stream) keeps a process per connection: use it on tcp "
                      "listeners or WebSocket endpoints, not HTTP routes", name);
    else if ((strcmp(front, "udp") == 0 || strcmp(front, "websocket") == 0) && h->type == TN_H_PROXY)
        tn_diag_error(c->d, v->pos, "handler '%s' (type proxy) serves HTTP routes and TCP listeners, not %s", name,
                      front);
}

static bool check_refs(ctx *c, const tn_key *k, const tn_value *v, const char *front)
{
    if (v->type == TN_V_ARRAY)
        for (size_t i = 0; i < v->u.a.len; i++)
            check_one_ref(c, k, v->u.a.items[i], front);
    else
        check_one_ref(c, k, v, front);
    return true;
}

const tn_handler_conf *tn_config_handler(const tn_config *cfg, const char *name)
{
    for (size_t i = 0; i < cfg->nhandlers; i++)
        if (strcmp(cfg->handlers[i].name, name) == 0)
            return &cfg->handlers[i];
    return NULL;
}

/* ---- collections -------------------------------------------------------- */

static void *grow_array(void *arr, size_t n, size_t size)
{
    void *p = realloc(arr, (n + 1) * size);
    if (p)
        memset((char *)p + n * size, 0, size);
    return p;
}

/* Where OBJ's KEY has its value, or FALLBACK when it is not written. */
static tn_pos value_pos(const tn_value *obj, const char *key, tn_pos fallback)
{
    const tn_value *v = tn_object_get(obj, key);
    return v ? v->pos : fallback;
}

static void read_handlers(ctx *c, const tn_value *sec)
{
    for (size_t i = 0; i < sec->u.o.len; i++) {
        const tn_member *m = &sec->u.o.items[i];
        char what[160];
        snprintf(what, sizeof(what), "handler '%s'", m->key);
        const tn_value *obj = want_object(c, m->val, what);
        if (!obj)
            continue;
        tn_handler_conf *arr = grow_array(c->cfg->handlers, c->cfg->nhandlers, sizeof(*arr));
        if (!arr)
            return;
        c->cfg->handlers = arr;
        tn_handler_conf *h = &arr[c->cfg->nhandlers++];
        h->name = strdup(m->key);
        h->pos = m->key_pos;
        h->type = -1;
        if (read_type(c, obj, "handler", "type", what, h) < 0)
            continue;
        char tn[32], kind[64];
        snprintf(kind, sizeof(kind), "handlers of type '%s'", type_name(handler_types, h->type, tn, sizeof(tn)));
        scope_call sc = { "handler", tn, "type", what, kind, NULL, NULL, NULL };
        apply_scope(c, &sc, h, obj);
        h->command_pos = value_pos(obj, "command", h->pos);
        h->cwd_pos = value_pos(obj, "cwd", h->pos);
        h->root_pos = value_pos(obj, "root", h->pos);
    }
}

static void read_middleware(ctx *c, const tn_value *sec)
{
    for (size_t i = 0; i < sec->u.o.len; i++) {
        const tn_member *m = &sec->u.o.items[i];
        char what[160];
        snprintf(what, sizeof(what), "middleware '%s'", m->key);
        const tn_value *obj = want_object(c, m->val, what);
        if (!obj)
            continue;
        tn_middleware_conf *arr = grow_array(c->cfg->middleware, c->cfg->nmiddleware, sizeof(*arr));
        if (!arr)
            return;
        c->cfg->middleware = arr;
        tn_middleware_conf *mw = &arr[c->cfg->nmiddleware++];
        mw->name = strdup(m->key);
        mw->pos = m->key_pos;
        mw->type = -1;
        if (read_type(c, obj, "middleware", "type", what, mw) < 0)
            continue;
        char tn[32], kind[64];
        type_name(mw_types, mw->type, tn, sizeof(tn));
        snprintf(kind, sizeof(kind), "middleware of type '%s'", tn);
        scope_call sc = { "middleware", tn, "type", what, kind, NULL, NULL, NULL };
        apply_scope(c, &sc, mw, obj);
        mw->file_pos = value_pos(obj, "file", mw->pos);
    }
}

/* A bare kind name in a middleware list means that kind with its defaults:
 * materialize it so the daemon looks every name up the same way and the
 * dump shows the defaults. */
static void materialize_middleware(ctx *c, const tn_strlist *names)
{
    for (size_t i = 0; i < names->n; i++) {
        const char *name = names->v[i];
        bool found = false;
        for (size_t j = 0; j < c->cfg->nmiddleware && !found; j++)
            found = strcmp(c->cfg->middleware[j].name, name) == 0;
        int type = tn_enum_index(mw_types, name);
        if (found || type < 0)
            continue;
        tn_middleware_conf *arr = grow_array(c->cfg->middleware, c->cfg->nmiddleware, sizeof(*arr));
        if (!arr)
            return;
        c->cfg->middleware = arr;
        tn_middleware_conf *mw = &arr[c->cfg->nmiddleware++];
        mw->name = strdup(name);
        mw->type = type;
        for (size_t k = 0; k < tn_schema_len; k++)
            if (tn_key_applies(&tn_schema[k], "middleware", name) && !(tn_schema[k].flags & TN_K_REQUIRED))
                tn_apply_default(c->d, &tn_schema[k], mw);
    }
}

static bool read_sni(ctx *c, const tn_key *k, void *base, const tn_value *v)
{
    (void)k;
    tn_tls_conf *tls = base;
    if (!want_object(c, v, "'sni'"))
        return false;
    for (size_t i = 0; i < v->u.o.len; i++) {
        const tn_member *m = &v->u.o.items[i];
        char what[160];
        snprintf(what, sizeof(what), "sni '%s'", m->key);
        const tn_value *obj = want_object(c, m->val, what);
        if (!obj)
            continue;
        tn_sni_conf *arr = grow_array(tls->sni, tls->nsni, sizeof(*arr));
        if (!arr)
            return false;
        tls->sni = arr;
        tn_sni_conf *s = &arr[tls->nsni++];
        s->name = strdup(m->key);
        s->pos = m->key_pos;
        scope_call sc = { "sni", NULL, NULL, what, NULL, NULL, NULL, NULL };
        apply_scope(c, &sc, s, obj);
        s->cert_pos = value_pos(obj, "cert", s->pos);
        s->key_pos = value_pos(obj, "key", s->pos);
    }
    return true;
}

static bool read_tls(ctx *c, const tn_key *k, void *base, const tn_value *v)
{
    (void)k;
    tn_listener_conf *li = base;
    if (!want_object(c, v, "'tls'"))
        return false;
    if (li->tls)
        return false;
    li->tls = calloc(1, sizeof(*li->tls));
    if (!li->tls)
        return false;
    li->tls->pos = v->pos;
    char what[160];
    snprintf(what, sizeof(what), "tls of listener '%s'", li->name);
    scope_call sc = { "tls", NULL, NULL, what, NULL, NULL, NULL, read_sni };
    apply_scope(c, &sc, li->tls, v);
    tn_tls_conf *t = li->tls;
    t->cert_pos = value_pos(v, "cert", v->pos);
    t->key_pos = value_pos(v, "key", v->pos);
    t->chain_pos = value_pos(v, "chain", v->pos);
    t->client_ca_pos = value_pos(v, "client_ca", v->pos);
    t->ciphers_pos = value_pos(v, "ciphers", v->pos);
    t->ciphersuites_pos = value_pos(v, "ciphersuites", v->pos);
    return true;
}

static bool valid_method(const char *m, size_t n)
{
    if (n == 1 && m[0] == '*')
        return true;
    for (size_t i = 0; i < n; i++)
        if (m[i] < 'A' || m[i] > 'Z')
            return false;
    return n > 0;
}

static bool read_routes(ctx *c, const tn_key *k, void *base, const tn_value *v)
{
    (void)k;
    tn_listener_conf *li = base;
    if (!want_object(c, v, "'routes'"))
        return false;
    for (size_t i = 0; i < v->u.o.len; i++) {
        const tn_member *m = &v->u.o.items[i];
        const char *spec = m->key, *sp = strchr(spec, ' ');
        const char *path = sp ? sp + 1 : spec;
        size_t mlen = sp ? (size_t)(sp - spec) : 0;
        while (*path == ' ')
            path++;
        if ((sp && !valid_method(spec, mlen)) || path[0] != '/' || strchr(path, ' ')) {
            tn_diag_error(c->d, m->key_pos, "bad route '%s' (use \"METHOD /path\" or \"/path\")", spec);
            continue;
        }
        char method[32];
        if (mlen >= sizeof(method)) {
            tn_diag_error(c->d, m->key_pos, "bad route '%s': method too long", spec);
            continue;
        }
        if (sp)
            memcpy(method, spec, mlen);
        else
            method[mlen++] = '*';
        method[mlen] = '\0';
        bool dup = false;
        for (size_t j = 0; j < li->nroutes && !dup; j++) {
            if (strcmp(li->routes[j].method, method) == 0 && strcmp(li->routes[j].path, path) == 0) {
                tn_diag_error(c->d, m->key_pos, "duplicate route '%s' (first defined at %d:%d)", spec,
                              li->routes[j].pos.line, li->routes[j].pos.col);
                dup = true;
            }
        }
        if (dup)
            continue;
        tn_route_conf *arr = grow_array(li->routes, li->nroutes, sizeof(*arr));
        if (!arr)
            return false;
        li->routes = arr;
        tn_route_conf *r = &arr[li->nroutes++];
        r->spec = strdup(spec);
        r->method = strdup(method);
        r->path = strdup(path);
        r->pos = m->key_pos;
        limits_copy(&r->limits, &li->limits);
        char what[300];
        snprintf(what, sizeof(what), "route '%s'", spec);
        scope_call sc = { "route", NULL, NULL, what, NULL, "http", &r->limits, NULL };
        if (m->val->type == TN_V_STRING) {
            tn_value *obj = tn_value_new(TN_V_OBJECT, m->val->pos);
            if (obj && tn_object_add(obj, strdup("handler"), m->val->pos, tn_value_clone(m->val)) == 0)
                apply_scope(c, &sc, r, obj);
            tn_value_free(obj);
            r->handler_pos = m->val->pos;
        } else if (m->val->type == TN_V_OBJECT) {
            apply_scope(c, &sc, r, m->val);
            r->handler_pos = value_pos(m->val, "handler", r->pos);
        } else {
            tn_diag_error(c->d, m->val->pos, "route '%s' must name a handler or be a block, not %s", spec,
                          tn_vtype_name(m->val->type));
        }
        materialize_middleware(c, &r->middleware);
    }
    return true;
}

static void need_one_handler(ctx *c, const char *handler, const tn_strlist *handlers, tn_pos pos, const char *what)
{
    if (handler && handlers->n)
        tn_diag_error(c->d, pos, "%s: set 'handler' or 'handlers', not both", what);
    else if (!handler && !handlers->n)
        tn_diag_error(c->d, pos, "%s: needs 'handler' or 'handlers'", what);
}

static bool read_websocket(ctx *c, const tn_key *k, void *base, const tn_value *v)
{
    (void)k;
    tn_listener_conf *li = base;
    if (!want_object(c, v, "'websocket'"))
        return false;
    for (size_t i = 0; i < v->u.o.len; i++) {
        const tn_member *m = &v->u.o.items[i];
        if (m->key[0] != '/' || strchr(m->key, ' ')) {
            tn_diag_error(c->d, m->key_pos, "bad WebSocket path '%s' (must start with '/')", m->key);
            continue;
        }
        tn_ws_conf *arr = grow_array(li->websocket, li->nwebsocket, sizeof(*arr));
        if (!arr)
            return false;
        li->websocket = arr;
        tn_ws_conf *w = &arr[li->nwebsocket++];
        w->path = strdup(m->key);
        w->pos = m->key_pos;
        limits_copy(&w->limits, &li->limits);
        char what[300];
        snprintf(what, sizeof(what), "WebSocket endpoint '%s'", m->key);
        scope_call sc = { "websocket", NULL, NULL, what, NULL, "websocket", &w->limits, NULL };
        tn_value *obj = NULL;
        if (m->val->type == TN_V_STRING || m->val->type == TN_V_ARRAY) {
            obj = tn_value_new(TN_V_OBJECT, m->val->pos);
            if (obj)
                tn_object_add(obj, strdup(m->val->type == TN_V_STRING ? "handler" : "handlers"), m->val->pos,
                              tn_value_clone(m->val));
        } else if (m->val->type != TN_V_OBJECT) {
            tn_diag_error(c->d, m->val->pos, "%s must name a handler, list handlers or be a block, not %s", what,
                          tn_vtype_name(m->val->type));
            continue;
        }
        const tn_value *use = obj ? obj : m->val;
        if (use) {
            apply_scope(c, &sc, w, use);
            need_one_handler(c, w->handler, &w->handlers, use->pos, what);
            w->handler_pos = value_pos(use, "handler", value_pos(use, "handlers", w->pos));
        }
        tn_value_free(obj);
    }
    return true;
}

static bool read_listener_nested(ctx *c, const tn_key *k, void *base, const tn_value *v)
{
    switch (k->type) {
    case TN_T_ROUTES: return read_routes(c, k, base, v);
    case TN_T_WEBSOCKET: return read_websocket(c, k, base, v);
    case TN_T_TLS: return read_tls(c, k, base, v);
    default: return false;
    }
}

static void read_listeners(ctx *c, const tn_value *sec)
{
    for (size_t i = 0; i < sec->u.o.len; i++) {
        const tn_member *m = &sec->u.o.items[i];
        char what[160];
        snprintf(what, sizeof(what), "listener '%s'", m->key);
        const tn_value *obj = want_object(c, m->val, what);
        if (!obj)
            continue;
        tn_listener_conf *arr = grow_array(c->cfg->listeners, c->cfg->nlisteners, sizeof(*arr));
        if (!arr)
            return;
        c->cfg->listeners = arr;
        tn_listener_conf *li = &arr[c->cfg->nlisteners++];
        li->name = strdup(m->key);
        li->pos = m->key_pos;
        li->protocol = -1;
        limits_copy(&li->limits, &c->cfg->limits);
        if (read_type(c, obj, "listener", "protocol", what, li) < 0)
            continue;
        const char *proto = tn_protocol_name(li->protocol);
        char kind[64];
        snprintf(kind, sizeof(kind), "%s listeners", proto);
        scope_call sc = { "listener", proto, "protocol", what, kind, proto, &li->limits, read_listener_nested };
        /* limits first: routes and endpoints copy the listener's limits */
        tn_value *ordered = tn_value_new(TN_V_OBJECT, obj->pos);
        for (int pass = 0; ordered && pass < 2; pass++) {
            for (size_t j = 0; j < obj->u.o.len; j++) {
                const tn_member *om = &obj->u.o.items[j];
                bool late = !strcmp(om->key, "routes") || !strcmp(om->key, "websocket");
                if (late == (pass == 1))
                    tn_object_add(ordered, strdup(om->key), om->key_pos, tn_value_clone(om->val));
            }
        }
        if (ordered)
            apply_scope(c, &sc, li, ordered);
        tn_value_free(ordered);
        tn_member *lm = tn_object_find(obj, "listen");
        if (lm)
            li->listen_pos = lm->val->pos;
        li->handler_pos = value_pos(obj, "handler", value_pos(obj, "handlers", li->pos));
        if (li->protocol != TN_PROTO_HTTP)
            need_one_handler(c, li->handler, &li->handlers, obj->pos, what);
        else
            materialize_middleware(c, &li->middleware);
    }
}

/* tcp and http share the TCP port space; a wildcard host overlaps every
 * host on the same port. Port 0 never collides. */
static void check_addresses(ctx *c)
{
    for (size_t i = 0; i < c->cfg->nlisteners; i++) {
        tn_listener_conf *a = &c->cfg->listeners[i];
        char ha[256], hb[256];
        int pa, pb;
        if (!a->listen || a->protocol < 0 || tn_parse_listen(a->listen, ha, sizeof(ha), &pa) < 0 || pa == 0)
            continue;
        for (size_t j = 0; j < i; j++) {
            tn_listener_conf *b = &c->cfg->listeners[j];
            if (!b->listen || b->protocol < 0 || tn_parse_listen(b->listen, hb, sizeof(hb), &pb) < 0 || pa != pb)
                continue;
            if ((a->protocol == TN_PROTO_UDP) != (b->protocol == TN_PROTO_UDP))
                continue;
            bool wild_a = !*ha || !strcmp(ha, "0.0.0.0") || !strcmp(ha, "::");
            bool wild_b = !*hb || !strcmp(hb, "0.0.0.0") || !strcmp(hb, "::");
            if (strcmp(ha, hb) == 0 || wild_a || wild_b) {
                tn_diag_error(c->d, a->listen_pos, "duplicate listen address %s (also used by listener '%s' at %d:%d)",
                              a->listen, b->name, b->listen_pos.line, b->listen_pos.col);
                break;
            }
        }
    }
}

/* What the schema's types cannot say: Redis is a host to connect to, and
 * the node id travels in a one-byte length (cluster.c). */
static void check_cluster(ctx *c, const tn_value *sec)
{
    const tn_cluster_conf *cl = &c->cfg->cluster;
    char host[256];
    int port;
    if (cl->redis && (tn_parse_listen(cl->redis, host, sizeof(host), &port) < 0 || !*host || port == 0))
        tn_diag_error(c->d, value_pos(sec, "redis", sec->pos), "'redis': \"%s\" is not a server to connect to (use host:port)",
                      cl->redis);
    if (cl->node_id && strlen(cl->node_id) > 255)
        tn_diag_error(c->d, value_pos(sec, "node_id", sec->pos), "'node_id': longer than 255 bytes");
}

static void read_flat(ctx *c, const char *scope, void *base, const tn_value *sec)
{
    char what[64];
    snprintf(what, sizeof(what), "[%s]", scope);
    scope_call sc = { scope, NULL, NULL, what, NULL, NULL, NULL, NULL };
    apply_scope(c, &sc, base, sec);
}

tn_config *tn_config_from_doc(tn_doc *doc, const char *path, tn_diag *diag)
{
    tn_config *cfg = calloc(1, sizeof(*cfg));
    if (!cfg) {
        tn_doc_free(doc);
        return NULL;
    }
    cfg->refs = 1;
    cfg->path = strdup(path);
    cfg->files = doc->files;
    cfg->nfiles = doc->nfiles;
    doc->files = NULL;
    doc->nfiles = 0;
    ctx c = { diag, cfg };
    int errors_before = tn_diag_errors(diag);
    int stored_before = diag->count;
    const tn_value *root = doc->root;
    const tn_value *sec[NSECTIONS] = { 0 };
    static const tn_value empty = { .type = TN_V_OBJECT };
    if (root) {
        for (size_t i = 0; i < root->u.o.len; i++) {
            const tn_member *m = &root->u.o.items[i];
            size_t s = 0;
            while (s < NSECTIONS && strcmp(m->key, sections[s]) != 0)
                s++;
            if (s == NSECTIONS) {
                tn_suggest sg;
                tn_suggest_init(&sg, m->key);
                for (size_t j = 0; j < NSECTIONS; j++)
                    tn_suggest_add(&sg, sections[j]);
                char sug[96];
                tn_diag_error(diag, m->key_pos, "unknown section '%s'%s", m->key, tn_suggest_text(&sg, sug, sizeof(sug)));
                continue;
            }
            if (m->val->type != TN_V_OBJECT) {
                tn_diag_error(diag, m->val->pos, "[%s] must be a section, not %s", m->key, tn_vtype_name(m->val->type));
                continue;
            }
            sec[s] = m->val;
        }
    }
    for (size_t s = 0; s < NSECTIONS; s++)
        if (!sec[s])
            sec[s] = &empty;
    read_flat(&c, "daemon", &cfg->daemon, sec[0]);
    tn_pos daemon_pos = sec[0]->type == TN_V_OBJECT && sec[0] != &empty ? sec[0]->pos
                                                                         : (tn_pos){ cfg->nfiles ? cfg->files[0] : NULL, 1, 1 };
    cfg->daemon.control_socket_pos = value_pos(sec[0], "control_socket", daemon_pos);
    read_flat(&c, "limits", &cfg->limits, sec[1]);
    read_handlers(&c, sec[2]);
    read_middleware(&c, sec[3]);
    read_listeners(&c, sec[4]);
    read_flat(&c, "cluster", &cfg->cluster, sec[5]);
    check_cluster(&c, sec[5]);
    check_addresses(&c);
    tn_diag_sort(diag, stored_before);
    tn_doc_free(doc);
    if (tn_diag_errors(diag) > errors_before) {
        /* the file names positions point into die with the config; the
         * messages themselves are already text */
        for (int i = stored_before; i < diag->count; i++)
            diag->pos[i].file = NULL;
        tn_config_free(cfg);
        return NULL;
    }
    return cfg;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

tn_config *tn_config_load(const char *path, tn_diag *diag)
{
    tn_doc doc = { 0 };
    int rc;
    if (has_suffix(path, ".yaml") || has_suffix(path, ".yml"))
        rc = tn_yaml_load_file(&doc, path, diag);
    else
        rc = tn_tusk_parse_file(&doc, path, diag);
    if (rc < 0) {
        tn_doc_free(&doc);
        return NULL;
    }
    return tn_config_from_doc(&doc, path, diag);
}

tn_config *tn_config_ref(tn_config *cfg)
{
    if (cfg)
        cfg->refs++;
    return cfg;
}

void tn_config_unref(tn_config *cfg)
{
    if (cfg && --cfg->refs <= 0)
        tn_config_free(cfg);
}

void tn_config_free(tn_config *cfg)
{
    if (!cfg)
        return;
    char tn[32];
    free_scope("daemon", NULL, &cfg->daemon);
    free_scope("cluster", NULL, &cfg->cluster);
    limits_free(&cfg->limits);
    for (size_t i = 0; i < cfg->nhandlers; i++) {
        tn_handler_conf *h = &cfg->handlers[i];
        if (h->type >= 0)
            free_scope("handler", type_name(handler_types, h->type, tn, sizeof(tn)), h);
        free(h->name);
    }
    free(cfg->handlers);
    for (size_t i = 0; i < cfg->nmiddleware; i++) {
        tn_middleware_conf *m = &cfg->middleware[i];
        if (m->type >= 0)
            free_scope("middleware", type_name(mw_types, m->type, tn, sizeof(tn)), m);
        free(m->name);
    }
    free(cfg->middleware);
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        tn_listener_conf *li = &cfg->listeners[i];
        if (li->protocol >= 0)
            free_scope("listener", tn_protocol_name(li->protocol), li);
        limits_free(&li->limits);
        for (size_t r = 0; r < li->nroutes; r++) {
            free_scope("route", NULL, &li->routes[r]);
            limits_free(&li->routes[r].limits);
            free(li->routes[r].spec);
            free(li->routes[r].method);
            free(li->routes[r].path);
        }
        free(li->routes);
        for (size_t w = 0; w < li->nwebsocket; w++) {
            free_scope("websocket", NULL, &li->websocket[w]);
            limits_free(&li->websocket[w].limits);
            free(li->websocket[w].path);
        }
        free(li->websocket);
        if (li->tls) {
            free_scope("tls", NULL, li->tls);
            for (size_t s = 0; s < li->tls->nsni; s++) {
                free_scope("sni", NULL, &li->tls->sni[s]);
                free(li->tls->sni[s].name);
            }
            free(li->tls->sni);
            free(li->tls);
        }
        free(li->name);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->nfiles; i++)
        free(cfg->files[i]);
    free(cfg->files);
    free(cfg->path);
    free(cfg);
}

/* ---- handler settings outside a config ---------------------------------- */

void tn_handler_conf_free(tn_handler_conf *c)
{
    char tn[32];
    free_scope("handler", type_name(handler_types, c->type, tn, sizeof(tn)), c);
    free(c->name);
    c->name = NULL;
}

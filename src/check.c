/* SPDX-License-Identifier: MIT */
/* check.c - what starting a configuration needs from the system, besides
 * binding its sockets.
 *
 * Loading a config checks its language (keys, types, references); whether
 * the directories, programs and files it names are usable is a question
 * about this machine, answered here. `tusknetd -t`, the start and every
 * reload run this same function before anything else, so a config that -t
 * accepts starts, and the start and a reload refuse what -t refuses with
 * the same FILE:LINE:COL messages, all at once.
 *
 * Each check is the one the running code relies on (tn_file_check_root()
 * for file handlers, tn_proc_check_conf() for exec, stream and worker, tn_tls_new()
 * for certificates, ...), called without side effects: nothing is created.
 * Sockets are not bound: on a reload the addresses are held by the daemon
 * being reloaded, and before a restart by the one still running. */
#include "check.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "handlers/handler.h"
#include "handlers/plugin.h"
#include "net/listener.h"
#include "net/tls.h"
#include "proc.h"
#include "proto/http.h"
#include "upstream/proxy.h"

static void check_handler(const tn_handler_conf *h, tn_diag *diag)
{
    char err[1024];
    tn_pos at = h->pos;
    int rc = 0;
    switch (h->type) {
    case TN_H_FILE:
        at = h->root_pos;
        rc = tn_file_check_root(h->root, err, sizeof(err));
        break;
    case TN_H_EXEC:
    case TN_H_STREAM:
    case TN_H_WORKER: rc = tn_proc_check_conf(h, &at, err, sizeof(err)); break;
    case TN_H_PLUGIN: rc = tn_plugin_check(h->path, err, sizeof(err)); break;
    case TN_H_PROXY: rc = tn_proxy_check_conf(h, err, sizeof(err)); break;
    default: break;
    }
    if (rc < 0)
        tn_diag_error(diag, at, "handler '%s': %s", h->name, err);
}

static void check_listener(const tn_listener_conf *li, tn_diag *diag)
{
    char err[1024];
    struct sockaddr_storage ss;
    socklen_t len;
    /* the message listener.c gives when it cannot bind for this reason */
    if (tn_listen_resolve(li->listen, &ss, &len, err, sizeof(err)) < 0)
        tn_diag_error(diag, li->listen_pos, "listener '%s': %s", li->name, err);
    if (li->tls)
        tn_tls_unref(tn_tls_new(li, diag));
}

int tn_check_startup(const tn_config *cfg, tn_diag *diag)
{
    int before = tn_diag_errors(diag);
    char err[1024];
    if (*cfg->daemon.control_socket && tn_check_control_socket(cfg->daemon.control_socket, err, sizeof(err)) < 0)
        tn_diag_error(diag, cfg->daemon.control_socket_pos, "%s", err);
    for (size_t i = 0; i < cfg->nhandlers; i++)
        check_handler(&cfg->handlers[i], diag);
    for (size_t i = 0; i < cfg->nmiddleware; i++) {
        const tn_middleware_conf *m = &cfg->middleware[i];
        if (tn_mw_check(m, err, sizeof(err)) < 0)
            tn_diag_error(diag, m->file_pos, "middleware '%s': %s", m->name, err);
    }
    for (size_t i = 0; i < cfg->nlisteners; i++)
        check_listener(&cfg->listeners[i], diag);
    tn_diag_sort(diag, 0);
    return tn_diag_errors(diag) > before ? -1 : 0;
}

/* ---- the control socket ------------------------------------------------------ */

int tn_check_socket_dir(const char *path, char *dir, size_t len, char *err, size_t errlen)
{
    if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
        snprintf(err, errlen, "control socket path too long: %s", path);
        return -1;
    }
    snprintf(dir, len, "%s", path);
    char *slash = strrchr(dir, '/');
    if (slash)
        slash[slash == dir] = '\0'; /* "/x.sock" lives in "/" */
    else
        dir[0] = '\0';
    return 0;
}

int tn_check_control_socket(const char *path, char *err, size_t errlen)
{
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    if (tn_check_socket_dir(path, dir, sizeof(dir), err, errlen) < 0)
        return -1;
    const char *where = *dir ? dir : ".";
    struct stat st;
    if (stat(where, &st) == 0) {
        if (!S_ISDIR(st.st_mode)) {
            snprintf(err, errlen, "control socket %s: %s is not a directory", path, where);
            return -1;
        }
        if (access(where, W_OK | X_OK) < 0) {
            snprintf(err, errlen, "control socket %s: cannot create it in %s: %s", path, where, strerror(errno));
            return -1;
        }
        return 0;
    }
    /* tn_control_open() makes the directory itself, one level deep */
    int why = errno;
    char parent[sizeof(dir)];
    snprintf(parent, sizeof(parent), "%s", dir);
    char *slash = strrchr(parent, '/');
    if (why == ENOENT) {
        if (slash)
            slash[slash == parent] = '\0';
        else
            snprintf(parent, sizeof(parent), ".");
        if (stat(parent, &st) < 0)
            why = errno;
        else if (!S_ISDIR(st.st_mode))
            why = ENOTDIR;
        else if (access(parent, W_OK | X_OK) < 0)
            why = errno;
        else
            return 0;
    }
    snprintf(err, errlen, "control socket %s: cannot create %s: %s", path, dir, strerror(why));
    return -1;
}

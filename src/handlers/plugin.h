/* SPDX-License-Identifier: MIT */
/* plugin.h - what the rest of the daemon asks of the plugin handler type
 * (the handler itself is tn_plugin_ops in handler.h; the ABI plugins
 * implement is include/tusknet/plugin.h). */
#ifndef TN_HANDLERS_PLUGIN_H
#define TN_HANDLERS_PLUGIN_H

#include <stddef.h>

#include "handlers/handler.h"

struct tn_json;
struct evbuffer;

/* Loads the shared object at PATH as the start would (ABI version, entry
 * symbol) without calling it, and unloads it: for `tusknetd -t`, the start
 * and reloads. Returns -1 with the reason in err. */
int tn_plugin_check(const char *path, char *err, size_t errlen);

/* The plugin's own counters: `stats` (inside the handler's object) and the
 * Prometheus family tusknet_plugin_value over the registry's handlers. */
void tn_plugin_stats_json(tn_handler *h, struct tn_json *j);
void tn_plugin_prometheus(tn_registry *r, struct evbuffer *out);

#endif

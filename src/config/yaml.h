/* SPDX-License-Identifier: MIT */
/* yaml.h - the YAML form of the config (libyaml): loading into the same value
 * tree as the TuskLang-style parser, and emitting a tree as YAML (used by
 * --dump-config and the control socket's `config`). */
#ifndef TN_CONFIG_YAML_H
#define TN_CONFIG_YAML_H

#include "config/value.h"

/* Load a YAML document into doc->root (must be a mapping at the top).
 * Errors as FILE:LINE:COL in DIAG; returns 0 when none. */
int tn_yaml_load_file(tn_doc *doc, const char *path, tn_diag *diag);
int tn_yaml_load_string(tn_doc *doc, const char *name, const char *text, size_t len,
                        tn_diag *diag);

/* Emit V as a YAML document with libyaml's emitter. Strings that would read
 * back as another type (numbers, booleans, null, empty) are quoted so that
 * loading the output gives an equal tree. Returns 0 or -1. */
int tn_yaml_emit_file(const tn_value *v, FILE *out);
/* Same into a malloc'd NUL-terminated buffer (*out, *len). */
int tn_yaml_emit_string(const tn_value *v, char **out, size_t *len);

#endif

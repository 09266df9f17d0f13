/* SPDX-License-Identifier: MIT */
/* tusk.h - the TuskLang-style configuration parser. */
#ifndef TN_CONFIG_TUSK_H
#define TN_CONFIG_TUSK_H

#include "config/value.h"

/* Nesting deeper than this (blocks, arrays, inline objects, includes
 * together) is an error rather than a stack overflow. */
#define TN_TUSK_MAX_DEPTH 64

/* Parse PATH into doc->root (an object: top-level keys and one object per
 * [section]). Errors go to DIAG; returns 0 when none were reported. On error
 * doc->root still holds whatever parsed, so callers may report more. */
int tn_tusk_parse_file(tn_doc *doc, const char *path, tn_diag *diag);

/* Same, from memory. NAME is used in positions; includes and @file resolve
 * relative to NAME's directory. TEXT need not be NUL-terminated. */
int tn_tusk_parse_string(tn_doc *doc, const char *name, const char *text, size_t len,
                         tn_diag *diag);

#endif

/* SPDX-License-Identifier: MIT */
/* ctl/render.h - the human output of tusknetctl: units (bytes, durations,
 * rates), aligned tables, one renderer per command, and the table of commands
 * this client knows with their argument counts. Renderers read a parsed answer
 * and write text; they never talk to the daemon. */
#ifndef TN_CTL_RENDER_H
#define TN_CTL_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "ctl/json.h"

typedef struct tn_ctl_table {
    int ncols;
    const char *const *hdr;
    const char *align; /* 'l' or 'r' per column */
    char **cells;      /* row-major */
    size_t nrows, cap, col;
} tn_ctl_table;

typedef struct tn_ctl_command {
    const char *name;
    int min_args, max_args; /* max -1: the rest is free text */
    int (*show)(const tn_ctl_jv *a, FILE *f);
} tn_ctl_command;

const char *tn_ctl_fmt_bytes(char *buf, size_t n, double v);
const char *tn_ctl_fmt_duration(char *buf, size_t n, double secs, int maxunits);
const char *tn_ctl_fmt_ms(char *buf, size_t n, double ms);
const char *tn_ctl_fmt_rate(char *buf, size_t n, double r);
const char *tn_ctl_fmt_byte_rate(char *buf, size_t n, double r);
void tn_ctl_table_init(tn_ctl_table *t, int ncols, const char *const *hdr, const char *align);
__attribute__((format(printf, 2, 3))) void tn_ctl_table_cell(tn_ctl_table *t, const char *fmt, ...);
void tn_ctl_table_print(const tn_ctl_table *t, FILE *f);
void tn_ctl_table_free(tn_ctl_table *t);
uint64_t tn_ctl_rejected_sum(const tn_ctl_jv *counters);
/* The HTTP status classes, in the order the tables show them. */
extern const char *const tn_ctl_http_classes[5];

const char *tn_ctl_listener_label(char *buf, size_t n, const char *name, const tn_ctl_jv *l);
bool tn_ctl_has_http(const tn_ctl_jv *stats);
/* ARGS: the command's first arguments ("" when absent), for the messages. */
int tn_ctl_show_ok(const char *cmd, const char *const args[3], const tn_ctl_jv *a, FILE *f);
const tn_ctl_command *tn_ctl_find_command(const char *name);

#endif

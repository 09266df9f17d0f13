/* SPDX-License-Identifier: MIT */
/* unit_util.h - helpers the unit tests of the HTTP handlers and middleware
 * share: scratch files, descriptor counts, and freeing what a hand-built
 * request allocated. Included after cmocka.h. */
#ifndef TN_TESTS_UNIT_UTIL_H
#define TN_TESTS_UNIT_UTIL_H

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

#include "handlers/handler.h"
#include "proto/http.h"

/* Open descriptors of this process (a test that leaks one shows here). */
static inline int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

/* DIR/NAME with LEN bytes of DATA. */
static inline void put(const char *dir, const char *name, const void *data, size_t len)
{
    char p[PATH_MAX];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* H as a file handler named "files" serving ROOT with index.html as its
 * index; INDEX_V is where the index list lives (one entry). */
static inline void file_handler(tn_handler *h, char *root, char **index_v)
{
    index_v[0] = "index.html";
    h->name = "files";
    h->ops = &tn_file_ops;
    h->conf.root = root;
    h->conf.index.v = index_v;
    h->conf.index.n = 1;
}

/* Removes the scratch tree DIR; 0 on success. */
static inline int remove_tree(const char *dir)
{
    char cmd[PATH_MAX + 32];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* What http.c's arena gave R: a list of chunks, each starting with the
 * pointer to the next (http.c frees it with the request). */
static inline void free_arena(tn_http_request *r)
{
    void *c = r->arena;
    while (c) {
        void *next = *(void **)c;
        free(c);
        c = next;
    }
    r->arena = NULL;
}

#endif

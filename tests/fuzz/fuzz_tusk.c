/* SPDX-License-Identifier: MIT */
/* fuzz_tusk.c - libFuzzer harness for the TuskLang-style parser.
 *
 * Any input must parse without a crash, leak or unbounded work, and end in a
 * consistent state: -1 exactly when errors were reported, every diagnostic
 * positioned. The name sits in a directory that does not exist, so relative
 * @include and @file find nothing (absolute paths in the input can still be
 * read; the harness does not need to prevent that).
 *
 * With -DTN_FUZZ_TUSK_YAML the parsed tree is also dumped as YAML and loaded
 * back, which must give an equal tree (link src/config/yaml.c and -lyaml).
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc src/config/value.c \
 *       src/config/tusk.c tests/fuzz/fuzz_tusk.c -o /tmp/fuzz_tusk
 *   /tmp/fuzz_tusk -max_total_time=60 /tmp/tusk-corpus tests/fuzz/corpus/tusk */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/tusk.h"
#ifdef TN_FUZZ_TUSK_YAML
#include "config/yaml.h"
#endif

#define FUZZ_NAME "/nonexistent/fuzz.conf"

static void die(const char *why)
{
    fprintf(stderr, "fuzz_tusk: %s\n", why);
    abort();
}

#ifdef TN_FUZZ_TUSK_YAML
static void yaml_round_trip(const tn_value *root)
{
    char *out = NULL;
    size_t len = 0;
    /* Strings that are not UTF-8 cannot be written as YAML: not a bug. */
    if (tn_yaml_emit_string(root, &out, &len) != 0)
        return;
    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    if (tn_yaml_load_string(&doc, "dump.yaml", out, len, &diag) != 0) {
        tn_diag_print(&diag, stderr);
        fprintf(stderr, "--- emitted:\n%s\n", out);
        die("the YAML dump of a parsed config does not load");
    }
    if (!tn_value_equal(root, doc.root)) {
        fprintf(stderr, "--- emitted:\n%s\n", out);
        die("the YAML dump of a parsed config loads as a different tree");
    }
    free(out);
    tn_doc_free(&doc);
    tn_diag_free(&diag);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    int rc = tn_tusk_parse_string(&doc, FUZZ_NAME, (const char *)data, size, &diag);
    if ((rc == 0) != (tn_diag_errors(&diag) == 0))
        die("return value disagrees with the diagnostics");
    for (int i = 0; i < diag.count; i++)
        if (!strchr(diag.msgs[i], ':'))
            die("diagnostic without a position");
#ifdef TN_FUZZ_TUSK_YAML
    if (rc == 0 && doc.root)
        yaml_round_trip(doc.root);
#endif
    tn_doc_free(&doc);
    tn_diag_free(&diag);
    return 0;
}

/* SPDX-License-Identifier: MIT */
/* fuzz_yaml.c - libFuzzer harness for the YAML loader and emitter.
 *
 * Any input must load without a crash, leak or unbounded work, and must end
 * in a consistent state (an object root; -1 exactly when errors were
 * reported). Whatever tree comes out - also the partial tree of a failed
 * load - must survive emit -> load unchanged, and emitting is idempotent.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Isrc src/config/value.c \
 *       src/config/yaml.c tests/fuzz/fuzz_yaml.c -lyaml -o /tmp/fuzz_yaml
 *   /tmp/fuzz_yaml -max_total_time=60 /tmp/yaml-corpus tests/fuzz/corpus/yaml */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/yaml.h"

static void die(const char *why, const char *emitted)
{
    fprintf(stderr, "fuzz_yaml: %s\n", why);
    if (emitted)
        fprintf(stderr, "--- emitted:\n%s\n---\n", emitted);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tn_doc doc = { 0 };
    tn_diag diag = { 0 };
    int rc = tn_yaml_load_string(&doc, "fuzz.yaml", (const char *)data, size, &diag);
    if (!doc.root || doc.root->type != TN_V_OBJECT)
        die("root is not an object", NULL);
    if ((rc == 0) != (tn_diag_errors(&diag) == 0))
        die("return value disagrees with the diagnostics", NULL);
    for (int i = 0; i < diag.count; i++)
        if (strncmp(diag.msgs[i], "fuzz.yaml:", 10) != 0)
            die("diagnostic without a position", NULL);

    char *out = NULL;
    size_t len = 0;
    if (tn_yaml_emit_string(doc.root, &out, &len) != 0)
        die("a loaded tree could not be emitted", NULL);
    if (strlen(out) != len)
        die("emitted length is wrong", out);

    tn_doc again = { 0 };
    tn_diag diag2 = { 0 };
    if (tn_yaml_load_string(&again, "emitted.yaml", out, len, &diag2) != 0) {
        tn_diag_print(&diag2, stderr);
        die("emitted YAML does not load", out);
    }
    if (!tn_value_equal(doc.root, again.root))
        die("emit -> load changed the tree", out);

    char *out2 = NULL;
    size_t len2 = 0;
    if (tn_yaml_emit_string(again.root, &out2, &len2) != 0)
        die("re-emitting failed", out);
    if (len2 != len || memcmp(out, out2, len) != 0)
        die("emitting is not idempotent", out);

    free(out);
    free(out2);
    tn_doc_free(&again);
    tn_diag_free(&diag2);
    tn_doc_free(&doc);
    tn_diag_free(&diag);
    return 0;
}

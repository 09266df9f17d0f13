/* SPDX-License-Identifier: MIT */
/* main.c - command line, config checking entry points, and startup.
 *
 * tusknetd runs in the foreground (systemd supervises it). -t checks a config
 * and exits; --dump-config prints the normalized config as YAML. A config
 * is checked the same way for -t and for the start: loaded, then
 * tn_check_startup(); only binding is left to the start. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "config/config.h"
#include "daemon.h"
#include "log.h"
#include "master.h"
#include "version.h"

#define DEFAULT_CONFIG "/etc/tusknetd/tusknetd.conf"

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: tusknetd [-c FILE] [-t] [--dump-config] [--log-level LEVEL] [-V] [-h]\n"
            "\n"
            "  -c, --config FILE     configuration (.conf/.tsk TuskLang-style, .yaml/.yml)\n"
            "                        default: " DEFAULT_CONFIG "\n"
            "  -t, --test            check the configuration and exit (0 valid, 1 not)\n"
            "      --dump-config     print the normalized configuration as YAML and exit\n"
            "      --log-level LEVEL error, warn, info or debug (overrides the config)\n"
            "  -V, --version         print the version and exit\n"
            "  -h, --help            this help\n");
}

int main(int argc, char **argv)
{
    enum { OPT_DUMP = 256, OPT_LOGLEVEL, OPT_REFERENCE };
    static const struct option opts[] = {
        { "config", required_argument, NULL, 'c' },
        { "test", no_argument, NULL, 't' },
        { "dump-config", no_argument, NULL, OPT_DUMP },
        { "log-level", required_argument, NULL, OPT_LOGLEVEL },
        { "config-reference", no_argument, NULL, OPT_REFERENCE },
        { "version", no_argument, NULL, 'V' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    const char *path = DEFAULT_CONFIG;
    int test = 0, dump = 0, log_level = -1, opt;
    while ((opt = getopt_long(argc, argv, "c:tVh", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': path = optarg; break;
        case 't': test = 1; break;
        case OPT_DUMP: dump = 1; break;
        case OPT_LOGLEVEL:
            log_level = tn_log_level_parse(optarg);
            if (log_level < 0) {
                fprintf(stderr, "tusknetd: unknown log level '%s' (error, warn, info, debug)\n", optarg);
                return 2;
            }
            break;
        case OPT_REFERENCE: tn_config_reference(stdout); return 0;
        case 'V': printf("tusknetd %s\n", TN_VERSION); return 0;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "tusknetd: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }

    tn_log_init();
    tn_diag diag = { 0 };
    tn_config *cfg = tn_config_load(path, &diag);
    /* -t and the start check the same (see check.c); a dump only shows */
    if (cfg && !dump && tn_check_startup(cfg, &diag) < 0) {
        tn_config_free(cfg);
        cfg = NULL;
    }
    tn_diag_print(&diag, stderr);
    tn_diag_free(&diag);
    if (!cfg) {
        if (test)
            fprintf(stderr, "tusknetd: configuration %s is invalid\n", path);
        return 1;
    }
    if (test || dump) {
        int rc = 0;
        if (dump)
            rc = tn_config_dump(cfg, stdout) < 0;
        else
            fprintf(stderr, "tusknetd: configuration %s is valid\n", path);
        tn_config_free(cfg);
        return rc;
    }
    tn_log_set_level(log_level >= 0 ? log_level : cfg->daemon.log_level);
    /* more than one worker: a master process supervises them (master.c) */
    if (tn_master_workers_wanted(cfg) > 1)
        return tn_master_run(cfg, path, log_level);
    return tn_daemon_run(cfg, path, log_level);
}

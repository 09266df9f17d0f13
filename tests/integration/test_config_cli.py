# SPDX-License-Identifier: MIT
"""The command line and the configuration language, end to end through the
real binary: -t, --dump-config, --config-reference, -V, -h, and every kind
of config error reported as FILE:LINE:COL: message.

Positions and messages are asserted exactly: a test fails if the check it
names is removed or reports somewhere else.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

TIMEOUT = 30
DIAG = re.compile(r"^(\S.*):(\d+):(\d+): ")


# ---- helpers --------------------------------------------------------------


def clean_env(extra=None):
    """The caller's environment without anything the configs under test read
    through @env, in the C locale so strerror texts are predictable."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TUSKNET_", "TN_TEST_")) and not k.startswith("LC_")}
    env["LC_ALL"] = "C"
    env.update(extra or {})
    return env


def run(binary, *args, env=None, cwd=None):
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT, env=clean_env(env), cwd=cwd)


def diagnostics(stderr):
    """The FILE:LINE:COL: lines of stderr, in order (sanitizer reports and
    the final verdict line are not of that form)."""
    return [l for l in stderr.splitlines() if DIAG.match(l) and not l.startswith("tusknetd:")]


def assert_errors(binary, path, expected, env=None):
    """`tusknetd -t -c PATH` must exit 1 reporting exactly EXPECTED."""
    res = run(binary, "-t", "-c", path, env=env)
    got = diagnostics(res.stderr)
    assert got == expected, f"stderr was:\n{res.stderr}"
    assert res.returncode == 1, f"exit {res.returncode}, stderr:\n{res.stderr}"
    assert f"tusknetd: configuration {path} is invalid" in res.stderr.splitlines()
    assert res.stdout == ""


def dump(binary, path, env=None, cwd=None):
    res = run(binary, "--dump-config", "-c", path, env=env, cwd=cwd)
    assert res.returncode == 0, f"--dump-config -c {path} exited {res.returncode}:\n{res.stderr}"
    assert diagnostics(res.stderr) == [], res.stderr
    assert res.stdout.strip(), "empty dump"
    return res.stdout


def _unquote(s):
    if s.startswith("'"):
        assert s.endswith("'") and len(s) >= 2, s
        return s[1:-1].replace("''", "'")
    if s.startswith('"'):
        assert s.endswith('"') and len(s) >= 2, s
        esc = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "/": "/", "r": "\r", "0": "\0"}
        return re.sub(r"\\(.)", lambda m: esc[m.group(1)], s[1:-1])
    return s


def _scalar(s):
    s = s.strip()
    if s == "{}":
        return {}
    if s == "[]":
        return []
    return _unquote(s)


def _split_key(s):
    if s[0] in "'\"":
        m = re.match(r"'(?:[^']|'')*'|\"(?:[^\"\\]|\\.)*\"", s)
        assert m and s[m.end():m.end() + 1] == ":", f"bad key line {s!r}"
        return _unquote(m.group(0)), s[m.end() + 1:].strip()
    if s.endswith(":"):
        return s[:-1], ""
    i = s.index(": ")
    return s[:i], s[i + 2:].strip()


def _indent(line):
    return len(line) - len(line.lstrip(" "))


def _block(lines, i, ind):
    if lines[i][ind:].startswith("- "):
        seq = []
        while i < len(lines) and _indent(lines[i]) == ind and lines[i][ind:].startswith("- "):
            seq.append(_scalar(lines[i][ind + 2:]))
            i += 1
        return seq, i
    obj = {}
    while i < len(lines) and _indent(lines[i]) == ind and not lines[i][ind:].startswith("- "):
        key, rest = _split_key(lines[i][ind:])
        assert key not in obj, f"duplicate key {key!r} in dump"
        i += 1
        if rest:
            obj[key] = _scalar(rest)
        elif i < len(lines) and (_indent(lines[i]) > ind or lines[i][ind:].startswith("- ")):
            obj[key], i = _block(lines, i, _indent(lines[i]))
        else:
            obj[key] = ""
    return obj, i


def parse_dump(text):
    """The block-style YAML --dump-config prints (mappings, lists of
    scalars, {} and []), scalars as text. Just enough to address keys."""
    lines = [l for l in text.split("\n") if l.strip()]
    obj, i = _block(lines, 0, 0)
    assert i == len(lines), f"unparsed dump from line: {lines[i]!r}"
    return obj


# ---- the shipped examples, dump and round trip ----------------------------

EXAMPLES = ["tusknetd.conf.example", "conf/examples/tusknetd.yaml"]


@pytest.mark.parametrize("example", EXAMPLES)
def test_example_is_valid(tusknetd, repo_root, example):
    res = run(tusknetd, "-t", "-c", example, cwd=repo_root)
    assert res.returncode == 0, res.stderr
    assert diagnostics(res.stderr) == [], res.stderr
    assert f"tusknetd: configuration {example} is valid" in res.stderr.splitlines()


def test_examples_dump_identically(tusknetd, repo_root):
    conf = dump(tusknetd, EXAMPLES[0], cwd=repo_root)
    yaml = dump(tusknetd, EXAMPLES[1], cwd=repo_root)
    assert conf == yaml
    # relative paths were resolved against each file's own directory
    cfg = parse_dump(conf)
    assert cfg["handlers"]["site"]["root"] == str(repo_root / "conf/www")
    assert set(cfg["listeners"]) == {"lines", "dgram", "web"}


@pytest.mark.parametrize("example", EXAMPLES)
def test_dump_round_trips(tusknetd, repo_root, tmp_path, example):
    first = dump(tusknetd, example, cwd=repo_root)
    copy = tmp_path / "dump.yaml"
    copy.write_text(first)
    assert dump(tusknetd, copy, cwd=tmp_path) == first


@pytest.mark.parametrize("example", EXAMPLES)
def test_dump_round_trips_from_another_directory(tusknetd, repo_root, tmp_path, example):
    first = dump(tusknetd, example, cwd=repo_root)
    moved = tmp_path / "elsewhere" / "deeper" / "moved.yml"
    moved.parent.mkdir(parents=True)
    moved.write_text(first)
    # absolute paths in the dump mean it loads the same from anywhere
    assert dump(tusknetd, moved, cwd="/") == first
    root = parse_dump(first)["handlers"]["site"]["root"]
    assert Path(root).is_absolute() and Path(root, "index.html").is_file()


# ---- README configuration reference ---------------------------------------

REFERENCE_TOOL = Path(__file__).resolve().parents[1] / "tools" / "reference.py"
BEGIN = "<!-- BEGIN CONFIG REFERENCE (generated by make reference) -->"
END = "<!-- END CONFIG REFERENCE -->"


def reference(*args, cwd=None):
    return subprocess.run([sys.executable, str(REFERENCE_TOOL), *map(str, args)], capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=cwd, env=clean_env())


def test_readme_reference_is_current(tusknetd, repo_root):
    res = reference("check", "README.md", tusknetd, cwd=repo_root)
    assert res.returncode == 0, (
        "README.md's configuration reference is stale or its markers are missing; "
        f"run 'make reference':\n{res.stderr}")


def test_config_reference_covers_schema(tusknetd):
    res = run(tusknetd, "--config-reference")
    assert res.returncode == 0, res.stderr
    for heading in ("`[daemon]`", "`[limits]`", "`[handlers]` NAME", "`[middleware]` NAME",
                    "`[listeners]` NAME"):
        assert f"#### {heading}" in res.stdout
    assert "| `log_level` | enum: error, warn, info, debug | `info` | all |" in res.stdout
    assert "| `command` | argv list | required | exec,stream,worker |" in res.stdout


def test_reference_tool_update_then_check(tusknetd, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\nintro\n\n{BEGIN}\nold text\n{END}\n\n## After\n")
    res = reference("check", readme, tusknetd)
    assert res.returncode == 1
    assert "out of date" in res.stderr and "make reference" in res.stderr
    assert "-old text" in res.stderr and "+| `log_level` |" in res.stderr  # the diff

    res = reference("update", readme, tusknetd)
    assert res.returncode == 0, res.stderr
    text = readme.read_text()
    ref = run(tusknetd, "--config-reference").stdout
    assert text == f"# T\n\nintro\n\n{BEGIN}\n\n{ref.rstrip()}\n\n{END}\n\n## After\n"
    assert reference("check", readme, tusknetd).returncode == 0
    assert reference("update", readme, tusknetd).returncode == 0
    assert readme.read_text() == text  # idempotent

    readme.write_text(text.replace("Least severe message logged.", "Something else."))
    res = reference("check", readme, tusknetd)
    assert res.returncode == 1
    assert "-| `log_level`" in res.stderr and "Least severe message logged." in res.stderr


def test_reference_tool_missing_markers(tusknetd, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# T\n\n{BEGIN}\nno end marker\n")
    for mode in ("check", "update"):
        res = reference(mode, readme, tusknetd)
        assert res.returncode == 1
        assert f"marker line {END} not found" in res.stderr
    assert readme.read_text() == f"# T\n\n{BEGIN}\nno end marker\n"
    assert reference("check", readme).returncode == 2  # usage


# ---- every error kind: FILE:LINE:COL: message, exit 1 ----------------------


def test_unknown_key_suggests(tusknetd, write_config):
    p = write_config("t.conf", '[daemon]\nlog_levle: "info"\nzzzzzz: 1\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:1: unknown key 'log_levle' in [daemon]; did you mean 'log_level'?",
        f"{p}:3:1: unknown key 'zzzzzz' in [daemon]",  # nothing close: no suggestion
    ])


@pytest.mark.parametrize("line, message", [
    ("max_connections: true", "'max_connections' must be an integer, not boolean"),
    ('max_connections: "lots"', "'max_connections' must be an integer, not \"lots\""),
    ("control_socket: 5", "'control_socket' must be a string, not integer"),
    ('log_level: ["info"]', "'log_level' must be a string, not array"),
])
def test_wrong_type(tusknetd, write_config, line, message):
    p = write_config("t.conf", f"[daemon]\n{line}\n")
    col = line.index(":") + 3
    assert_errors(tusknetd, p, [f"{p}:2:{col}: {message}"])


def test_out_of_range(tusknetd, write_config):
    p = write_config("t.conf", '[daemon]\nmax_connections: 0\n[limits]\nidle_timeout: "8d"\nmax_line: 8\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:18: 'max_connections' is out of range: 0 (allowed 1 to 10000000)",
        f"{p}:4:15: 'idle_timeout' is out of range: 8d (allowed 0s to 7d)",
        f"{p}:5:11: 'max_line' is out of range: 8 (allowed 16 to 1GB)",
    ])


def test_bad_duration(tusknetd, write_config):
    p = write_config("t.conf", '[daemon]\nshutdown_timeout: "10 parsecs"\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:19: 'shutdown_timeout': bad duration \"10 parsecs\" (use e.g. 250ms, 30s, 5m, 1h)"])


def test_bad_size(tusknetd, write_config):
    p = write_config("t.conf", '[limits]\nmax_body: "12XB"\nmax_line: "1.5"\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:11: 'max_body': bad size \"12XB\" (use e.g. 512, 64KB, 1MB)",
        f"{p}:3:11: 'max_line': bad size \"1.5\" (use e.g. 512, 64KB, 1MB)",  # a fraction of a byte
    ])


def test_undefined_handler_suggests(tusknetd, write_config):
    p = write_config("t.conf", '[handlers]\necho { type: "echo" }\n[listeners]\n'
                     'l { protocol: "tcp" listen: "127.0.0.1:7000" handlers: ["echo", "ecoh"] }\n')
    assert_errors(tusknetd, p, [f"{p}:4:65: undefined handler 'ecoh'; did you mean 'echo'?"])


HANDLERS = '[handlers]\ne { type: "echo" }\n[listeners]\n'


def test_duplicate_listen_address(tusknetd, write_config):
    p = write_config("t.conf", HANDLERS
                     + 'a { protocol: "tcp"  listen: "127.0.0.1:7000" handler: "e" }\n'
                     + 'b { protocol: "http" listen: "127.0.0.1:7000" }\n'
                     + 'c { protocol: "udp"  listen: "127.0.0.1:7000" handler: "e" }\n')
    # tcp and http share the port space; udp does not
    assert_errors(tusknetd, p, [
        f"{p}:5:30: duplicate listen address 127.0.0.1:7000 (also used by listener 'a' at 4:30)"])


def test_duplicate_listen_address_wildcard(tusknetd, write_config):
    p = write_config("t.conf", HANDLERS
                     + 'a { protocol: "tcp" listen: "*:7000" handler: "e" }\n'
                     + 'b { protocol: "tcp" listen: "127.0.0.1:7000" handler: "e" }\n'
                     + 'c { protocol: "tcp" listen: "127.0.0.1:0" handler: "e" }\n'
                     + 'd { protocol: "tcp" listen: "127.0.0.1:0" handler: "e" }\n')
    # a wildcard overlaps every host on its port; port 0 never collides
    assert_errors(tusknetd, p, [
        f"{p}:5:29: duplicate listen address 127.0.0.1:7000 (also used by listener 'a' at 4:29)"])


def test_distinct_addresses_are_valid(tusknetd, write_config):
    p = write_config("t.conf", HANDLERS
                     + 'a { protocol: "tcp" listen: "127.0.0.1:7000" handler: "e" }\n'
                     + 'b { protocol: "udp" listen: "127.0.0.1:7000" handler: "e" }\n'
                     + 'c { protocol: "tcp" listen: "127.0.0.2:7000" handler: "e" }\n')
    res = run(tusknetd, "-t", "-c", p)
    assert res.returncode == 0, res.stderr


def test_unknown_protocol(tusknetd, write_config):
    p = write_config("t.conf", HANDLERS + 'a { protocol: "tpc" listen: "127.0.0.1:7000" handler: "e" }\n')
    assert_errors(tusknetd, p, [
        f"{p}:4:15: unknown protocol 'tpc' (expected one of: tcp, udp, http); did you mean 'tcp'?"])


def test_include_cycle(tusknetd, write_config):
    a = write_config("a.conf", '[daemon]\n@include("b.conf")\n')
    b = write_config("b.conf", '# b includes a back\nlog_level: "warn"\n@include("a.conf")\n')
    assert_errors(tusknetd, a, [f"{b}:3:1: include cycle: {a} -> {b} -> {a}"])


def test_missing_include_file(tusknetd, write_config, tmp_path):
    p = write_config("t.conf", '[daemon]\nlog_level: "warn"\n  @include("conf.d/nope.conf")\n')
    assert_errors(tusknetd, p, [
        f"{p}:3:3: cannot open include file {tmp_path}/conf.d/nope.conf: No such file or directory"])


def test_include_glob_without_match_is_fine(tusknetd, write_config):
    p = write_config("t.conf", '[handlers]\n@include("conf.d/*.conf")\n')
    res = run(tusknetd, "-t", "-c", p)
    assert res.returncode == 0, res.stderr


def test_error_in_included_file_names_that_file(tusknetd, write_config):
    p = write_config("main.conf", '[handlers]\n@include("conf.d/*.conf")\n')
    inc = write_config("conf.d/x.conf", '\nx { type: "echo"  bogus: 1 }\n')
    assert_errors(tusknetd, p, [f"{inc}:2:19: unknown key 'bogus' in handler 'x'"])


def test_missing_file_function(tusknetd, write_config, tmp_path):
    p = write_config("t.conf", '[middleware]\nauth { type: "auth"  tokens: [@file("secrets/token")] }\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:31: cannot open file {tmp_path}/secrets/token: No such file or directory"])


def test_env_without_default_must_be_set(tusknetd, write_config):
    p = write_config("t.conf", '[daemon]\nlog_level: @env("TN_TEST_LEVEL")\n')
    assert_errors(tusknetd, p, [f"{p}:2:12: environment variable TN_TEST_LEVEL is not set"])
    res = run(tusknetd, "-t", "-c", p, env={"TN_TEST_LEVEL": "debug"})
    assert res.returncode == 0, res.stderr


def test_unknown_section(tusknetd, write_config):
    p = write_config("t.conf", '[deamon]\nlog_level: "info"\n')
    assert_errors(tusknetd, p, [f"{p}:1:2: unknown section 'deamon'; did you mean 'daemon'?"])


def test_key_not_for_this_handler_type(tusknetd, write_config):
    p = write_config("t.conf", '[handlers]\ne { type: "echo"  timeout: "2s" }\n'
                     'f { type: "file"  root: "."  command: ["ls"] }\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:19: 'timeout' does not apply to handlers of type 'echo'",
        f"{p}:3:30: 'command' does not apply to handlers of type 'file'",
    ])


def test_missing_required_key(tusknetd, write_config):
    p = write_config("t.conf", '[handlers]\nx {\n    type: "exec"\n    timeout: "2s"\n}\n'
                     'y { type: "static" }\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:3: handler 'x': missing required key 'command'",
        f"{p}:6:3: handler 'y': missing required key 'reply'",
    ])


@pytest.mark.parametrize("htype, extra", [("health", ""), ("file", ' root: "."'),
                                          ("metrics", ""), ("redirect", ' location: "/x"')])
@pytest.mark.parametrize("proto", ["tcp", "udp"])
def test_http_only_handler_on_non_http_listener(tusknetd, write_config, htype, extra, proto):
    p = write_config("t.conf", f'[handlers]\nh {{ type: "{htype}"{extra} }}\n[listeners]\n'
                     f'l {{ protocol: "{proto}" listen: "127.0.0.1:7000" handler: "h" }}\n')
    assert_errors(tusknetd, p, [
        f"{p}:4:55: handler 'h' (type {htype}) only serves HTTP routes, not {proto}"])


def test_several_errors_in_file_order(tusknetd, write_config):
    # sections are validated daemon-first whatever their order in the file;
    # the report must still follow the file
    p = write_config("t.conf", "\n".join([
        '[listeners]',
        'l { protocol: "tcp" listen: "127.0.0.1:7000" handler: "nope" }',
        '[handlers]',
        'x { type: "exec" }',
        '[daemon]',
        'log_levle: "info"',
        'max_connections: 0',
        '',
    ]))
    assert_errors(tusknetd, p, [
        f"{p}:2:55: undefined handler 'nope'",
        f"{p}:4:3: handler 'x': missing required key 'command'",
        f"{p}:6:1: unknown key 'log_levle' in [daemon]; did you mean 'log_level'?",
        f"{p}:7:18: 'max_connections' is out of range: 0 (allowed 1 to 10000000)",
    ])


def test_yaml_syntax_error_position(tusknetd, write_config):
    p = write_config("t.yaml", "daemon:\n  log_level: info\n  max_connections: [1\n")
    assert_errors(tusknetd, p, [
        f"{p}:4:1: did not find expected ',' or ']' (while parsing a flow sequence at 3:20)"])


def test_yaml_schema_errors_positions(tusknetd, write_config):
    p = write_config("t.yaml", "\n".join([
        "daemon:",
        "  log_levle: info",
        "handlers:",
        "  x:",
        "    type: exec",
        "    timeout: 2 parsecs",
        "  y: { type: echo, timeout: 1s }",
        "listeners:",
        "  l: { protocol: tcp, listen: '127.0.0.1:7000', handler: yy }",
        "",
    ]))
    assert_errors(tusknetd, p, [
        f"{p}:2:3: unknown key 'log_levle' in [daemon]; did you mean 'log_level'?",
        f"{p}:5:5: handler 'x': missing required key 'command'",
        f"{p}:6:14: 'timeout': bad duration \"2 parsecs\" (use e.g. 250ms, 30s, 5m, 1h)",
        f"{p}:7:20: 'timeout' does not apply to handlers of type 'echo'",
        f"{p}:9:58: undefined handler 'yy'; did you mean 'y'?",
    ])


def test_tusk_syntax_error_position(tusknetd, write_config):
    p = write_config("t.conf", '[daemon]\nlog_level: "info\n')
    assert_errors(tusknetd, p, [f"{p}:2:12: unterminated string"])


# ---- TuskLang syntax end to end through --dump-config ----------------------

MAIN_CONF = """\
# every TuskLang feature the daemon's own configs use
$host: @env("TN_TEST_HOST", "0.0.0.0")
$port = @env("TN_TEST_PORT", "7101")
$prefix: "api"

[daemon]
log_level = @env("TN_TEST_LEVEL")
shutdown_timeout: "90s"

[limits]
idle_timeout: "1500ms"
max_line: 2048
max_body: "1.5MB"

[handlers]
hello > type: "static"  reply: "hi from " + $prefix + "\\t!" <
raw { type: "static"  reply: 'no\\escape' }
@include("conf.d/*.conf")

[middleware]
auth {
    type = "auth"
    tokens: [
        @file("secrets/token"),
        "other",
    ]
}

[listeners]
web {
    protocol = "http"
    listen = $host + ":7100"
    middleware: ["auth"]
    routes { "GET /hello": "hello"  "GET /a": { handler: "extra_a" } }
}
lines > protocol: "tcp"  listen: "127.0.0.1:" + $port  handlers: ["extra_a", "extra_b", "hello"] <
"quoted name" { protocol: "udp"  listen: "127.0.0.1:7102"  handler: "extra_b" }
"""


def tusk_tree(write_config, crlf=False):
    p = write_config("main.conf", MAIN_CONF, crlf=crlf)
    write_config("secrets/token", "s3cr3t-token\n")
    write_config("conf.d/10-a.conf", '# included\nextra_a { type: "static"  reply: "A" }\n', crlf=crlf)
    write_config("conf.d/20-b.conf", 'extra_b > type = "echo" <\n', crlf=crlf)
    # not matched by the glob: would be an error if it were included
    write_config("conf.d/README", "this is not a config\n")
    return p


ENV = {"TN_TEST_HOST": "127.0.0.9", "TN_TEST_LEVEL": "debug"}


def test_tusk_syntax_through_dump(tusknetd, write_config):
    cfg = parse_dump(dump(tusknetd, tusk_tree(write_config), env=ENV))
    assert cfg["daemon"]["log_level"] == "debug"                       # @env, `=` form
    assert list(cfg["handlers"]) == ["hello", "raw", "extra_a", "extra_b"]  # @include glob, in order
    assert cfg["handlers"]["hello"]["reply"] == "hi from api\t!"       # $var, +, escapes, > < block
    assert cfg["handlers"]["raw"]["reply"] == "no\\escape"             # 'raw string'
    assert cfg["handlers"]["extra_a"] == {"type": "static", "reply": "A", "status": "200",
                                          "content_type": "text/plain; charset=utf-8", "headers": {}}
    assert cfg["handlers"]["extra_b"] == {"type": "echo"}
    assert cfg["middleware"]["auth"]["tokens"] == ["s3cr3t-token", "other"]  # @file, newline dropped
    web = cfg["listeners"]["web"]
    assert web["protocol"] == "http"
    assert web["listen"] == "127.0.0.9:7100"                            # @env + concatenation
    assert web["middleware"] == ["auth"]
    assert web["routes"]["GET /hello"]["handler"] == "hello"
    assert web["routes"]["GET /a"]["handler"] == "extra_a"
    lines = cfg["listeners"]["lines"]
    assert lines["listen"] == "127.0.0.1:7101"                          # @env default
    assert lines["handlers"] == ["extra_a", "extra_b", "hello"]
    assert cfg["listeners"]["quoted name"]["handler"] == "extra_b"


def test_durations_and_sizes_normalized(tusknetd, write_config):
    p = write_config("t.conf", "\n".join([
        "[daemon]",
        'shutdown_timeout: "90s"',
        "[limits]",
        'idle_timeout: "1500ms"',
        "read_timeout: 30",
        'write_timeout: "120s"',
        'handshake_timeout: 1.5',
        "max_line: 2048",
        'max_body: "1.5MB"',
        'max_header: "32KiB"',
        "max_message: 1000",
        'max_output: "1GB"',
        "[handlers]",
        'e { type: "echo" }',
        "[listeners]",
        'l { protocol: "tcp"  listen: "127.0.0.1:0"  handler: "e"  idle_timeout: 7200 }',
        "",
    ]))
    cfg = parse_dump(dump(tusknetd, p))
    assert cfg["daemon"]["shutdown_timeout"] == "90s"
    assert {k: cfg["limits"][k] for k in ("idle_timeout", "read_timeout", "write_timeout",
                                          "handshake_timeout", "max_line", "max_body", "max_header",
                                          "max_message", "max_output")} == {
        "idle_timeout": "1500ms",
        "read_timeout": "30s",
        "write_timeout": "2m",
        "handshake_timeout": "1500ms",
        "max_line": "2KB",
        "max_body": "1536KB",
        "max_header": "32KB",
        "max_message": "1000",
        "max_output": "1GB",
    }
    # a listener inherits [limits] and may override them
    assert cfg["listeners"]["l"]["max_body"] == "1536KB"
    assert cfg["listeners"]["l"]["idle_timeout"] == "2h"


def test_crlf_file_same_dump(tusknetd, write_config, tmp_path):
    lf = dump(tusknetd, tusk_tree(write_config), env=ENV)
    crlf_tree = tusk_tree(write_config, crlf=True)
    assert b"\r\n" in crlf_tree.read_bytes()
    assert dump(tusknetd, crlf_tree, env=ENV) == lf


def test_crlf_error_positions(tusknetd, write_config):
    p = write_config("t.conf", '[daemon]\nlog_level: "info"  \nlog_levle: "x"\n  shutdown_timeout: "1x"\n',
                     crlf=True)
    assert_errors(tusknetd, p, [
        f"{p}:3:1: unknown key 'log_levle' in [daemon]; did you mean 'log_level'?",
        f"{p}:4:21: 'shutdown_timeout': bad duration \"1x\" (use e.g. 250ms, 30s, 5m, 1h)",
    ])


def test_tusk_dump_round_trips(tusknetd, write_config, tmp_path):
    first = dump(tusknetd, tusk_tree(write_config), env=ENV)
    again = tmp_path / "other" / "dump.yaml"
    again.parent.mkdir()
    again.write_text(first)
    assert dump(tusknetd, again) == first


# ---- command line --------------------------------------------------------


def test_version(tusknetd, repo_root):
    version = re.search(r'#define TN_VERSION "([^"]+)"', (repo_root / "src/version.h").read_text()).group(1)
    for opt in ("-V", "--version"):
        res = run(tusknetd, opt)
        assert res.returncode == 0
        assert res.stdout == f"tusknetd {version}\n"


def test_help(tusknetd):
    for opt in ("-h", "--help"):
        res = run(tusknetd, opt)
        assert res.returncode == 0
        assert res.stdout.startswith("Usage: tusknetd ")
        for word in ("-c, --config FILE", "-t, --test", "--dump-config", "-V, --version"):
            assert word in res.stdout


@pytest.mark.parametrize("args", [["--bogus"], ["-x"], ["-c"], ["stray-argument"],
                                  ["--log-level", "loud", "-t"]])
def test_bad_command_line_exits_2(tusknetd, args):
    res = run(tusknetd, *args)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip()


def test_missing_config_file(tusknetd, tmp_path):
    for path in ("/nonexistent.conf", tmp_path / "no" / "such.yaml"):
        if Path(path).exists():
            continue
        res = run(tusknetd, "-c", path, "-t")
        assert res.returncode == 1
        assert diagnostics(res.stderr) == [f"{path}:1:1: cannot open {path}: No such file or directory"]
        assert f"tusknetd: configuration {path} is invalid" in res.stderr


def test_dump_of_invalid_config_fails(tusknetd, write_config):
    p = write_config("t.conf", "[daemon]\nmax_connections: 0\n")
    res = run(tusknetd, "--dump-config", "-c", p)
    assert res.returncode == 1
    assert res.stdout == ""
    assert diagnostics(res.stderr) == [
        f"{p}:2:18: 'max_connections' is out of range: 0 (allowed 1 to 10000000)"]


def test_stream_handler_on_http_route(tusknetd, write_config):
    # one process per connection has no meaning for request/response HTTP
    p = write_config("t.conf", '[handlers]\ns { type: "stream" command: ["cat"] }\n[listeners]\n'
                     'w { protocol: "http" listen: "127.0.0.1:7000" routes { "/s": "s" } }\n')
    assert_errors(tusknetd, p, [
        f"{p}:4:62: handler 's' (type stream) keeps a process per connection: use it on tcp "
        "listeners or WebSocket endpoints, not HTTP routes"])


def test_negative_numbers_are_out_of_range(tusknetd, write_config):
    # bare numbers are seconds for durations and bytes for sizes, and say so
    p = write_config("t.conf", '[limits]\nidle_timeout: -5\nread_timeout: -1.5\nmax_line: -3\nrate_limit: -1\n')
    assert_errors(tusknetd, p, [
        f"{p}:2:15: 'idle_timeout' is out of range: -5s (allowed 0s to 7d)",
        f"{p}:3:15: 'read_timeout' is out of range: -1.5s (allowed 0s to 7d)",
        f"{p}:4:11: 'max_line' is out of range: -3 (allowed 16 to 1GB)",
        f"{p}:5:13: 'rate_limit' must not be negative",
    ])

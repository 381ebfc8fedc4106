"""snapgraph: a GraphQL gateway (and Apollo Federation 2 subgraph) over the snapshots REST API.

(The command's parsing only; the work happens in the modules it calls. Every mistake a user
can make on the command line ends in one line on stderr and exit code 2, never a traceback.)

snapgraph serve [--port 8000] [--upstream-url URL] ...   the gateway
snapgraph serve --workers 4 ...                           the gateway in 4 processes
snapgraph upstream [--port 9000]                          the reference upstream alone
snapgraph schema [--check] [--output schema.graphql]      print (or check) the subgraph SDL
snapgraph register FILE.graphql ... --output safelist.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import NoReturn

import uvicorn

from snapgraph import logs
from snapgraph._version import __version__
from snapgraph.errors import ConfigError
from snapgraph.settings import FEDERATION_VERSIONS, Settings, env_name, unknown_variables

logger = logging.getLogger("snapgraph")

DEMO_HINT = """\
snapgraph: SNAPGRAPH_UPSTREAM_URL is not set: demo data from the reference upstream at {upstream}
  GraphiQL:  {graphiql}
  Headers:   {{"X-API-Key": "{api_key}"}}   (or {{"Authorization": "Bearer {token}"}})
  curl:      curl -s {endpoint} -H 'Content-Type: application/json' -H 'X-API-Key: {api_key}' \\
               -d '{{"query": "{{ snapshots {{ id name sizeBytes }} }}"}}'
"""


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0), or a usage error already printed (2)
        return int(exc.code or 0)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"snapgraph: {exc}", file=sys.stderr)
        # A misspelt variable is the likeliest cause of a missing setting: name it here too
        # (when serving, the warning is logged once logging is set up).
        for name, guess in unknown_variables(dict(os.environ)):
            hint = f" (did you mean {guess}?)" if guess else ""
            print(f"snapgraph: {name} is not a snapgraph setting{hint}", file=sys.stderr)
        return 2
    except _Refused as exc:
        print(f"snapgraph: {exc}", file=sys.stderr)
        return 2


class _Refused(Exception):
    """A command-line mistake that is no setting's (a file that cannot be read or written)."""


class _Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line like every other mistake's."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"snapgraph: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="snapgraph",
        description=__doc__.splitlines()[0],
        epilog="Every serve flag is also an environment variable, named in its help. "
        "`snapgraph COMMAND --help` lists a command's flags.",
    )
    parser.add_argument("--version", action="version", version=f"snapgraph {__version__}")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="serve the gateway (with demo data when no upstream URL is set)",
        description="Serve the GraphQL gateway. Flags override SNAPGRAPH_* variables.",
    )
    _add_setting_flags(serve)
    serve.set_defaults(run=_serve)

    upstream = commands.add_parser(
        "upstream",
        help="serve the reference upstream with demo data",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    upstream.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    upstream.add_argument("--port", type=int, default=9000, help="TCP port to listen on")
    upstream.set_defaults(run=_upstream)

    schema = commands.add_parser(
        "schema",
        help="print the subgraph SDL (schema.graphql)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    schema.add_argument("--output", type=Path, help="write to this file instead of stdout")
    schema.add_argument("--check", type=Path, help="exit 1 if this file differs from the SDL")
    # Not read from SNAPGRAPH_FEDERATION_VERSION: `make schema` writes the committed
    # schema.graphql, which must not depend on a developer's environment.
    schema.add_argument(
        "--federation-version",
        choices=FEDERATION_VERSIONS,
        default=Settings.federation_version,
        metavar="VERSION",
        help=f"Apollo Federation version to link, {FEDERATION_VERSIONS[0]} to "
        f"{FEDERATION_VERSIONS[-1]}",
    )
    schema.set_defaults(run=_schema)

    register = commands.add_parser("register", help="write a safelist of GraphQL documents")
    register.add_argument("documents", nargs="+", type=Path, help=".graphql files, one per doc")
    register.add_argument(
        "--output", type=Path, required=True, help="the safelist file to write (JSON)"
    )
    register.set_defaults(run=_register)
    return parser


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per setting, named after it; values go through the same parser as env vars."""
    for setting in dataclasses.fields(Settings):
        flag = "--" + setting.name.replace("_", "-")
        shown = _shown_default(setting.default)
        text = f"{setting.metadata['help']} [{env_name(setting.name)}; default: {shown}]"
        help_text = text.replace("%", "%%")  # argparse formats help with %
        if str(setting.type) == "bool":
            parser.add_argument(
                flag, dest=setting.name, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=setting.name, metavar="VALUE", help=help_text)


def _shown_default(default: object) -> str:
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, tuple):
        return ",".join(default) or "none"
    return str(default)


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    """Environment first, flags over it; both validated the same way."""
    return Settings.from_environ(environ_with_flags(args, environ))


def environ_with_flags(args: argparse.Namespace, environ: dict[str, str]) -> dict[str, str]:
    """`environ` with each flag given as its `SNAPGRAPH_*` variable (what workers inherit)."""
    merged = dict(environ)
    for setting in dataclasses.fields(Settings):
        value = getattr(args, setting.name, None)
        if isinstance(value, bool):
            merged[env_name(setting.name)] = "true" if value else "false"
        elif value is not None:
            merged[env_name(setting.name)] = value
    return merged


def _serve(args: argparse.Namespace) -> int:
    from snapgraph import workers

    environ = environ_with_flags(args, dict(os.environ))
    try:
        settings = Settings.from_environ(environ)
        workers.check(settings)
        # Even at debug, httpx and httpcore speak only from WARNING up: httpcore's DEBUG
        # records print the upstream's response headers (Set-Cookie among them), httpx's INFO
        # line per request repeats our own "upstream GET" line (see logs.py).
        logs.configure(settings.log_level, settings.log_format)
        _warn_about(args, dict(os.environ))
        with _upstream_for(settings) as settings:
            workers.serve(settings, environ)  # a file a setting names is read as the app starts
    except ConfigError as exc:
        raise _named_as_given(exc, args) from None
    return 0


def _named_as_given(exc: ConfigError, args: argparse.Namespace) -> ConfigError:
    """The error of a setting given as a flag names the flag first: the user typed that."""
    for setting in dataclasses.fields(Settings):
        if env_name(setting.name) == exc.setting and getattr(args, setting.name) is not None:
            flag = "--" + setting.name.replace("_", "-")
            # The rest of the message, any value in it already masked for this setting.
            rest = str(exc).removeprefix(exc.setting).lstrip()
            return ConfigError(f"{flag} ({exc.setting})", rest, None)
    return exc


def _warn_about(args: argparse.Namespace, environ: dict[str, str]) -> None:
    """A typo in a variable's name should not be silent; a secret on the command line is
    visible to every user of the machine (`ps`)."""
    for name, guess in unknown_variables(environ):
        hint = f" (did you mean {guess}?)" if guess else ""
        logger.warning("%s is not a snapgraph setting; it is ignored%s", name, hint)
    if getattr(args, "cache_secret", None) is not None:
        logger.warning(
            "--cache-secret is visible in the process list; prefer SNAPGRAPH_CACHE_SECRET_FILE"
        )


@contextlib.contextmanager
def _upstream_for(settings: Settings) -> Iterator[Settings]:
    """The settings to serve with: the reference upstream runs in-process when none is set."""
    if settings.upstream_url is not None:
        yield settings
        return
    from snapgraph.reference.app import create_reference_app
    from snapgraph.reference.data import DEMO_USERS
    from snapgraph.serving import serve_in_thread

    with serve_in_thread(create_reference_app()) as upstream_url:
        alice = DEMO_USERS[0]
        endpoint = f"http://{settings.host}:{settings.port}/graphql"
        print(
            DEMO_HINT.format(
                upstream=upstream_url,
                graphiql=endpoint,
                endpoint=endpoint,
                api_key=alice.api_key,
                token=alice.token,
            ),
            file=sys.stderr,
            flush=True,
        )
        yield dataclasses.replace(settings, upstream_url=upstream_url)


def _upstream(args: argparse.Namespace) -> int:
    from snapgraph.reference.app import create_reference_app

    uvicorn.run(create_reference_app(), host=args.host, port=args.port)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from snapgraph.graph.schema import build_schema, subgraph_sdl

    sdl = subgraph_sdl(build_schema(args.federation_version))
    if args.check is not None:
        if _read_text(args.check) != sdl:
            print(
                f"snapgraph: {args.check} differs from the schema; run `make schema`",
                file=sys.stderr,
            )
            return 1
        return 0
    if args.output is not None:
        _write_text(args.output, sdl)
    else:
        sys.stdout.write(sdl)
    return 0


def _register(args: argparse.Namespace) -> int:
    from snapgraph.web.persisted_queries import register_documents

    for path in args.documents:
        _read_text(path)  # each file readable, as UTF-8, or one line naming it
    safelist = register_documents(args.documents)
    _write_text(args.output, json.dumps(safelist, indent=2) + "\n")
    print(f"snapgraph: registered {len(safelist)} documents in {args.output}", file=sys.stderr)
    return 0


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise _Refused(f"{path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise _Refused(f"{path}: not UTF-8 text") from None


def _write_text(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise _Refused(f"{path}: {exc.strerror or exc}") from None

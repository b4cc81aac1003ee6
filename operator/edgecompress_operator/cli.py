"""``edgecompress-operator``: reads the EDGECOMPRESS_* configuration, fails fast, then runs kopf.

kopf watches exactly the namespaces the configuration names (all, or EDGECOMPRESS_WATCH_NAMESPACE),
the same scope the reconcile loop counts running jobs in. Standalone: one active replica (see the
README's "High availability").
"""

from __future__ import annotations

import sys

import click
import kopf

from .config import ConfigError, load_config


@click.command()
@click.option(
    "--log-format",
    type=click.Choice(["plain", "json"]),
    default="plain",
    show_default=True,
    help="kopf's log format; json for log collectors.",
)
@click.option("--verbose", is_flag=True, help="Debug logging.")
def main(log_format: str, verbose: bool) -> None:
    """Run the CompressionJob operator."""
    try:
        config = load_config()
    except ConfigError as error:
        click.echo(f"edgecompress-operator: {error}", err=True)
        sys.exit(2)
    kopf.configure(verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.FULL)
    from . import main as handlers  # noqa: F401  (registers the kopf handlers)

    namespaces = [config.watch_namespace] if config.watch_namespace else []
    kopf.run(standalone=True, clusterwide=not namespaces, namespaces=namespaces, memo=kopf.Memo(config=config))


if __name__ == "__main__":
    main()

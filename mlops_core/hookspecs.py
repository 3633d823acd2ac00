"""Every hook specification of mlops-core, grouped by lifecycle.

Two kinds of hooks:

* **Provider hooks** announce what a plugin offers. They are called once per
  plugin manager, each plugin on its own, so one broken plugin cannot hide the
  others. They must stay cheap: register import strings, never import heavy
  libraries here.
* **Event hooks** are broadcast to every plugin after something happened. Return
  values are ignored. The core delivers events to each implementation
  separately and isolates failures: an exception is logged and counted in
  ``Hooks.event_errors`` but never stops the operation that fired the event.

Hook wrappers (``@hookimpl(wrapper=True)`` or ``hookwrapper=True``) are refused
when a plugin registers: every implementation is called on its own.

Implement a hook with :data:`mlops_core.hookimpl`::

    from mlops_core import hookimpl

    @hookimpl
    def mlops_register_backends(backends):
        backends.add_storage("mystore", "my_plugin.store:MyStore", config="my_plugin.store:MyStoreConfig")

The reference page ``docs/hooks.md`` is generated from this module, in this order.
Types are imported under TYPE_CHECKING only, so importing this module is cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # pragma: no cover
    from pathlib import Path

    from .batch.types import BatchResult
    from .catalog import BackendRegistrar, CommandRegistrar
    from .entities import (Alert, AliasChange, Deployment, DeploymentAction, DriftReport, ImageRef, ModelVersion,
                           PredictionBatch, PredictionEvent)

PROJECT_NAME = "mlops_core"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# =============================================================================
# Providers: what a plugin offers
# =============================================================================


@hookspec
def mlops_register_backends(backends: "BackendRegistrar") -> None:
    """Announce the backends this plugin offers, one call per backend.

    Call ``backends.add_storage``, ``add_registry``, ``add_builder``,
    ``add_deployer``, ``add_monitor`` or ``add_format`` with a backend name and
    a ``"module:attribute"`` import string for the factory (and optionally for
    an attrs config class). The module is imported only when a stack actually
    builds that backend, so discovery stays fast however heavy the backend is.

    :param backends: the registrar, bound to the calling plugin; it validates
        names and raises :class:`~mlops_core.errors.PluginError` on a duplicate.
    :return: nothing; the return value is ignored.

    Called once per plugin manager, for each plugin separately (not firstresult).
    """


@hookspec
def mlops_add_cli_commands(commands: "CommandRegistrar", subparsers: "CommandRegistrar") -> None:
    """Add top-level ``mlops`` subcommands (for example ``mlops serve``).

    ``commands.add(name, help=..., handler="module:function")`` adds a command and
    returns its ``argparse.ArgumentParser`` for the arguments;
    ``commands.group(name, help=...)`` returns a registrar for subcommands. The
    handler is imported only when the command runs and is called as
    ``function(args) -> int`` (the exit code). Raise
    :class:`~mlops_core.errors.MlopsError` for expected failures; the CLI prints
    them without a traceback. Keep this hook import-cheap: it runs on every
    ``mlops`` invocation, ``--help`` included.

    :param commands: the registrar of ``mlops`` commands, bound to this plugin.
    :param subparsers: the same registrar under the parameter name of plugins
        written before it existed; its ``add_parser(name, **kwargs)`` still works
        like argparse's. Deprecated: take ``commands``.

    Called once per CLI run, for each plugin separately; a plugin that raises is
    reported by ``mlops plugins`` and the other commands keep working.
    """


# =============================================================================
# Events: bundles and the registry
# =============================================================================


@hookspec
def mlops_bundle_saved(path: "Path", manifest: dict[str, Any]) -> None:
    """A model was saved as a bundle.

    :param path: the bundle folder, complete and verified.
    :param manifest: the parsed JSON manifest (format, signature, files, requirements...).

    Called after ``mlops_core.save`` wrote the last file. Return value ignored.
    """


@hookspec
def mlops_version_registered(version: "ModelVersion") -> None:
    """A new model version was committed to the registry.

    :param version: the new version, with its artifact reference and lineage.

    Called after the registry transaction committed. Return value ignored.
    """


@hookspec
def mlops_alias_changed(change: "AliasChange") -> None:
    """An alias was set, moved or deleted.

    :param change: model, alias, the new version (None when deleted) and the previous one.

    Return value ignored.
    """


@hookspec
def mlops_version_deleted(model: str, version: int) -> None:
    """A model version was deleted from the registry (its number will not be reused).

    :param model: model name.
    :param version: the deleted version number.

    Return value ignored.
    """


# =============================================================================
# Events: images and deployments
# =============================================================================


@hookspec
def mlops_image_built(version: "ModelVersion", image: "ImageRef") -> None:
    """A builder produced an image (and pushed it, when asked) for a version.

    :param version: the version that was built.
    :param image: reference, digest, layout path and labels of the image.

    Return value ignored.
    """


@hookspec
def mlops_deployment_changed(deployment: "Deployment", action: "DeploymentAction") -> None:
    """A deployment was created, updated, rolled back or deleted.

    :param deployment: the deployment state after the action.
    :param action: one of ``"deployed"``, ``"updated"``, ``"rolled_back"``, ``"deleted"``
        (:data:`~mlops_core.entities.DeploymentAction`; the core refuses others).

    Return value ignored.
    """


# =============================================================================
# Events: serving and monitoring
# =============================================================================


@hookspec
def mlops_predictions_served(event: "PredictionEvent") -> None:
    """A model server answered a prediction call (one request, or one adaptive batch).

    Fired on the serving hot path, after the response is computed. Servers skip
    building the event entirely when no plugin implements this hook, so it costs
    nothing when nobody listens. Implementations must be fast and must not block;
    hand heavy work to a background thread.

    :param event: model, version, decoded inputs and outputs, latency, batch size, error.

    Return value ignored.
    """


@hookspec
def mlops_predictions_batch(batch: "PredictionBatch") -> None:
    """Prediction calls of one model version, delivered together (about once a second while serving).

    The fast path for monitors: one call per batch instead of one per request.
    A plugin that implements this hook receives served predictions *only* here,
    whichever way they are emitted: a single event from ``predictions_served``
    arrives as a batch of one, and plugins that implement only
    ``mlops_predictions_served`` get a server's batches call by call. Called on a
    background thread; implementations must not block for long.

    :param batch: columns of the calls (latencies, batch sizes, timestamps,
        errors, request ids) and their input and output tensors; ``batch.events()``
        yields them as :class:`~mlops_core.entities.PredictionEvent`.

    Return value ignored.
    """


@hookspec
def mlops_batch_completed(result: "BatchResult") -> None:
    """A batch scoring job finished (``mlops batch`` / ``mlops_core.batch_score``), with or without failures.

    Fired once per job, in the driver process, after every partition was scored,
    skipped or given up on. The partitions' predictions reached monitors before,
    one ``mlops_predictions_batch`` per partition built from a sample of its rows.

    :param result: a :class:`~mlops_core.batch.types.BatchResult`: model, version,
        engine, rows written, partitions, skipped and failed ones, seconds, output URL
        (``to_dict()`` for JSON).

    Return value ignored.
    """


@hookspec
def mlops_drift_detected(report: "DriftReport") -> None:
    """A drift monitor found a feature whose score crossed its threshold.

    :param report: the drift monitor's report: a :class:`~mlops_core.entities.DriftReport`
        (``model``, ``version``, ``drifted`` feature names, ``to_dict()`` for everything else).

    Return value ignored.
    """


@hookspec
def mlops_alert(alert: "Alert") -> None:
    """Something needs a human: alerters (webhook, chat, pager) listen here.

    :param alert: an :class:`~mlops_core.entities.Alert` (``severity`` info, warning or
        critical, ``title``, ``model``, ``version``, ``details``). It is also a read-only
        mapping of those keys, like the dicts of earlier versions; firing a dict
        still works and is converted (an invalid one raises InvalidInputError).

    Return value ignored.
    """


@hookspec
def mlops_collect_metrics() -> str | None:
    """Return Prometheus text-format (0.0.4) lines for a server's ``/metrics`` page.

    Called on every scrape; every non-None result is concatenated. Return None
    when the plugin has nothing to expose.
    """

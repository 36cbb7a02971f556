"""The setup pane: choose models, dataset, techniques and training settings, then run them or a file.

Every change is validated at once through the config loader (greenlab.tui.form), so a bad value is
refused inline with the loader's own message and its field is marked. The pane runs nothing itself: it
posts `GridRequested` with a validated grid and the app's worker takes it from there.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, Select, SelectionList, Static
from textual.widgets.select import InvalidSelectValueError
from textual.widgets.selection_list import Selection

from greenlab.core.errors import ConfigError
from greenlab.core.grid import forecast as forecast_module
from greenlab.core.grid.forecast import Forecast
from greenlab.core.grid.session import preview
from greenlab.core.plan.analysis import Plan
from greenlab.core.plan.config import GridRun, load_grid
from greenlab.core.plan.settings import OPTIMIZERS
from greenlab.core.train import compression, datasets, zoo
from greenlab.tui import form
from greenlab.tui.field import Field
from greenlab.tui.ticks import TickBox, TickList

_LABELS = {
    "dataset": "dataset",
    "epochs": "epochs",
    "batch_size": "batch size",
    "lr": "lr",
    "optimizer": "optimizer",
    "device": "device",
    "repeats": "repeats",
    "seed": "seed",
    "max_train_batches": "max batches",
    "idle_s": "idle s",
    "pretrained": "pretrained weights",
}
_DEVICES = ["auto", "cpu", "cuda", "cuda:0", "cuda:1", "mps"]
FORECAST_AFTER_S = 0.4  # the form rests this long before it is forecast: a word typed is one forecast


def _count(params: int) -> str:
    if not params:
        return "-"
    return f"{params / 1e6:.1f}M" if params >= 1e6 else f"{params / 1e3:.1f}K"


def model_prompt(spec: zoo.ModelSpec, dataset: str = "", image_size: int | None = None) -> str:
    """One model picker line: name, parameter count (1000-class head) and the input a run on `dataset` will
    use: `image_size` when set, else the resolution the child picks for that dataset (digits train at 32 px,
    not the 224 px a model was trained at); a text model's sequence length is its own."""
    size = spec.input_size
    if spec.modality == "image" and dataset:
        size = image_size or datasets.default_image_size(dataset, spec.input_size, spec.min_input_size)
    return f"{spec.name:<13} {_count(spec.params):>6} {size:>3}"


class SetupPane(Vertical):
    """The form and its two actions (run the selection; load a file and queue its grid)."""

    @dataclass
    class FormChanged(Message):
        """A value of the form changed (the app keeps the form as a preference)."""

    @dataclass
    class GridRequested(Message):
        """A validated grid to queue; `source` says where it came from (the form or a file)."""

        runs: list[GridRun]
        force: bool
        source: str
        ray: str = ""  # a Ray address (local, auto, ray://host:port); empty: this machine, one run at a time
        plan: Plan | None = None  # the analysis plan its verdicts are judged by
        forecast: Forecast | None = None  # its forecast, where one was made (a day or more asks first)

    @dataclass
    class ForecastMade(Message):
        """The forecast of the form's grid as it stood at `generation`, made on a worker thread."""

        generation: int
        keys: tuple[str, ...]
        force: bool
        forecast: Forecast | None
        problem: str = ""

    def __init__(
        self,
        experiments_path: str | None = None,
        *,
        restore: dict[str, Any] | None = None,
        db: Any = None,
        calibrate: forecast_module.Calibrate | None = None,
        queued_keys: Callable[[], set[str]] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.experiments_path = experiments_path or ""
        self.initial = form.initial_values(experiments_path)  # what "changed" is measured against
        self.restore = restore or {}  # the form as the user last left it (preferences)
        self.db = db  # the store the forecast reads earlier runs from
        self.calibrate = calibrate  # the app's Calibrator: one child at a time, none while a grid runs
        # The run keys of the app's grids queued or running: a forecast leaves out what they will store first.
        self.queued_keys = queued_keys or set
        self._ready = False
        self.problem: str | None = None  # the loader's message for the form as it stands, or None
        self.forecast: Forecast | None = None  # of the form's grid, once made
        self._forecast_of: tuple[tuple[str, ...], bool] | None = None  # the run keys and force it was made for
        self._forecast_generation = 0
        # The first forecast waits for the app's first frame: it reads the store's history (a study's 5,000
        # runs) on a worker thread, which would hold the interpreter's lock while that frame is drawn.
        self._forecast_held = True
        self._checked: form.FormValues | None = None  # the values the form was last validated with

    # -- layout ---------------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        initial = self.initial
        with Horizontal(id="setup-columns"):
            with Vertical(id="models-col", classes="column"):
                yield Label("Models        [dim]params  in[/]", classes="section")
                yield TickList(
                    *(
                        Selection(
                            model_prompt(spec, str(initial.settings.get("dataset") or "")),
                            spec.name,
                            spec.name in initial.models,
                            id=f"m-{spec.name}",
                        )
                        for spec in zoo.MODELS.values()
                    ),
                    id="f-models",
                )
                with Horizontal(classes="row"):
                    yield Label("more", classes="field-label short")
                    yield Field(placeholder="hf:<id>, ...", id="f-extra_models", compact=True)
            # One scroll for both setting columns: side by side when wide, stacked when narrow (the
            # layout is switched in the stylesheet by the app's width breakpoints).
            with VerticalScroll(id="settings-cols", can_focus=False):
                with Vertical(id="training-col", classes="column"):
                    yield Label("Data and training", classes="section")
                    for key in form.FORM_SETTINGS:
                        yield from self._setting_row(key, initial.settings.get(key))
                with Vertical(id="techniques-col", classes="column"):
                    yield Label("Techniques", classes="section")
                    tables = initial.technique_settings
                    for name in compression.technique_names():
                        # One group per technique: narrow terminals lay the groups out two by two.
                        with Vertical(classes="technique-group"):
                            yield TickBox(
                                name, name in initial.techniques, id=f"t-{name}", compact=True, classes="technique"
                            )
                            for key, value in tables.get(name, {}).items():
                                yield from self._technique_row(name, key, value)
                    with Horizontal(classes="row"):
                        yield Label("combine", classes="field-label short")
                        yield Field(
                            initial.combinations, placeholder="prune+stego, ...", id="f-combinations", compact=True
                        )
        yield Static("", id="setup-status")
        yield Static("", id="setup-forecast")
        with Horizontal(id="setup-actions"):
            yield Button("Run selection", id="run-selection", variant="primary", compact=True)
            yield TickBox(
                "force rerun",
                id="f-force",
                compact=True,
                tooltip="rerun runs already completed with identical settings",
            )
            yield Field(self.experiments_path, placeholder="experiments.toml", id="f-file", compact=True)
            yield Field(
                placeholder="ray: off",
                id="f-ray",
                compact=True,
                tooltip="Run on Ray: local, auto or ray://host:port (empty: here, one run at a time)",
            )
            yield Button("Load file", id="load-file", compact=True)

    def _setting_row(self, key: str, value: Any) -> ComposeResult:
        if key == "pretrained":
            yield TickBox(_LABELS[key], bool(value), id="f-pretrained", compact=True)
            return
        with Horizontal(classes="row"):
            yield Label(_LABELS[key], classes="field-label", id=f"l-{key}")
            if key == "optimizer":
                yield Select(
                    [(o, o) for o in OPTIMIZERS],
                    value=value if value in OPTIMIZERS else OPTIMIZERS[0],
                    allow_blank=False,
                    id="f-optimizer",
                    compact=True,
                )
            else:
                suggester = {"dataset": SuggestFromList(list(datasets.NAMES)), "device": SuggestFromList(_DEVICES)}.get(
                    key
                )
                yield Field(
                    str(value),
                    id=f"f-{key}",
                    compact=True,
                    suggester=suggester,
                    placeholder="none" if key == "max_train_batches" else "",
                )

    def _technique_row(self, name: str, key: str, value: Any) -> ComposeResult:
        with Horizontal(classes="row technique-setting"):
            yield Label(key.replace("_", " "), classes="field-label", id=f"l-{name}-{key}")
            choices = form.CHOICES.get((name, key))
            if choices:
                yield Select(
                    [(c, c) for c in choices],
                    value=value if value in choices else choices[0],
                    allow_blank=False,
                    id=f"f-{name}-{key}",
                    compact=True,
                )
            else:
                yield Field(
                    str(value), id=f"f-{name}-{key}", compact=True, placeholder="default" if value == "" else ""
                )

    def on_mount(self) -> None:
        self._apply(self.restore)
        self._ready = True
        self.check()
        self.mark_changed()
        self.show_model_inputs()
        self.call_after_refresh(self._release_forecast)

    def _release_forecast(self) -> None:
        self._forecast_held = False
        self.refresh_forecast()

    def show_model_inputs(self) -> None:
        """Each model's input as the runs will use it, for the dataset and image size now in the form."""
        dataset = str(self.query_one("#f-dataset", Input).value).strip()
        image_size = self.initial.hidden_settings.get("image_size")
        picker = self.query_one("#f-models", TickList)
        for spec in zoo.MODELS.values():
            picker.replace_option_prompt(
                f"m-{spec.name}", model_prompt(spec, dataset, image_size if isinstance(image_size, int) else None)
            )

    def _apply(self, saved: dict[str, Any]) -> None:
        """Put saved form values back into the widgets; anything unknown or of the wrong kind is skipped."""
        models = saved.get("models")
        if isinstance(models, list):
            picker = self.query_one("#f-models", TickList)
            picker.deselect_all()
            for name in models:
                if name in zoo.MODELS:
                    picker.select(name)
        for key, widget_id in (
            ("extra_models", "#f-extra_models"),
            ("combinations", "#f-combinations"),
            ("ray", "#f-ray"),
        ):
            if isinstance(saved.get(key), str):
                self.query_one(widget_id, Input).value = saved[key]
        settings: dict[str, Any] = saved["settings"] if isinstance(saved.get("settings"), dict) else {}
        for key in form.FORM_SETTINGS:
            if key in settings:
                self._set(f"#f-{key}", settings[key])
        techniques = saved.get("techniques")
        if isinstance(techniques, list):
            for name in compression.technique_names():
                self.query_one(f"#t-{name}", TickBox).value = name in techniques
        tables: dict[str, Any] = (
            saved["technique_settings"] if isinstance(saved.get("technique_settings"), dict) else {}
        )
        for name, table in self.initial.technique_settings.items():
            for key in table:
                value = (tables.get(name) or {}).get(key) if isinstance(tables.get(name), dict) else None
                if value is not None:
                    self._set(f"#f-{name}-{key}", value)

    def _set(self, selector: str, value: Any) -> None:
        widget = self.query_one(selector)
        if isinstance(widget, TickBox):
            widget.value = bool(value)
        elif isinstance(widget, Select):
            try:
                widget.value = value
            except InvalidSelectValueError:  # a choice this version no longer offers: keep the file's
                pass
        elif isinstance(widget, Input):
            widget.value = str(value)

    def preference(self) -> dict[str, Any]:
        """The form as it stands, for the preferences file (the file's hidden settings stay in the file)."""
        values = self.values()
        return {
            "models": values.models,
            "extra_models": values.extra_models,
            "settings": values.settings,
            "techniques": values.techniques,
            "combinations": values.combinations,
            "technique_settings": values.technique_settings,
            "ray": self.ray_address,
        }

    def _fields(self) -> list[tuple[str, Any, Any]]:
        """(field id, its value now, its value as loaded) for every setting field of the form."""
        values, initial = self.values(), self.initial
        fields = [(key, values.settings.get(key), initial.settings.get(key)) for key in form.FORM_SETTINGS]
        for name, table in initial.technique_settings.items():
            fields += [(f"{name}-{key}", values.technique_settings[name][key], value) for key, value in table.items()]
        return fields

    def mark_changed(self) -> None:
        """A field whose value differs from the loaded file's (or the defaults') gets a '*' after its label and
        the `-changed` class: visible without colour, so nothing runs with a setting the user did not mean."""
        for field_id, now, loaded in self._fields():
            changed = str(now) != str(loaded)
            widget = self.query_one(f"#f-{field_id}")
            widget.set_class(changed, "-changed")
            if isinstance(widget, TickBox):
                text = _LABELS[field_id]
                widget.label = f"{text} *" if changed else text
                continue
            label = self.query_one(f"#l-{field_id}", Label)
            text = _LABELS.get(field_id, field_id.split("-", 1)[-1].replace("_", " "))
            label.update(f"{text} *" if changed else text)

    # -- reading the form -----------------------------------------------------------------------------
    def values(self) -> form.FormValues:
        settings: dict[str, Any] = {}
        for key in form.FORM_SETTINGS:
            widget: Any = self.query_one(f"#f-{key}")  # an Input, a Checkbox or a Select: each has a value
            settings[key] = widget.value if not isinstance(widget, Select) else str(widget.value)
        names = compression.technique_names()
        tables = {
            name: {key: _value(self.query_one(f"#f-{name}-{key}")) for key in table}
            for name, table in self.initial.technique_settings.items()
        }
        return form.FormValues(
            models=list(self.query_one("#f-models", SelectionList).selected),
            extra_models=self.query_one("#f-extra_models", Input).value,
            settings=settings,
            techniques=[n for n in names if self.query_one(f"#t-{n}", Checkbox).value],
            combinations=self.query_one("#f-combinations", Input).value,
            technique_settings=tables,
            hidden_settings=self.initial.hidden_settings,
            analysis=self.initial.analysis,
        )

    @property
    def ray_address(self) -> str:
        return self.query_one("#f-ray", Input).value.strip()

    @property
    def force(self) -> bool:
        return self.query_one("#f-force", Checkbox).value

    def check(self) -> list[GridRun] | None:
        """Validate the form; show the loader's message (and mark its field) or a summary of the grid."""
        values = self._checked = self.values()
        status = self.query_one("#setup-status", Static)
        for widget in self.query(".-invalid"):
            widget.remove_class("-invalid")
        try:
            runs = form.validate(values)
        except ConfigError as exc:
            # Content, not markup: messages quote TOML like [defaults] that markup would swallow
            self.problem = str(exc)
            status.update(Content(self.problem))
            status.set_class(True, "-error")
            self._mark(form.field_of(exc))
            return None
        self.problem = None
        models = len({r.model for r in runs})
        techniques = len({r.technique for r in runs})
        repeats = runs[0].settings.repeats if runs else 0
        status.update(
            Content(
                f"{len(runs)} runs: {models} model{'s' * (models != 1)} x {techniques} "
                f"technique{'s' * (techniques != 1)} x {repeats} repeat{'s' * (repeats != 1)}"
                f" on {runs[0].settings.dataset if runs else '-'}"
                + (
                    f" (and {', '.join(sorted(self.initial.hidden_settings))} from {self.experiments_path})"
                    if self.initial.hidden_settings
                    else ""
                )
            )
        )
        status.set_class(False, "-error")
        self._request_forecast(runs)
        return runs

    # -- the forecast ---------------------------------------------------------------------------------
    def refresh_forecast(self) -> None:
        """Forecast the form's grid again (the store changed: a grid stored runs to go by); the status line,
        which may tell of a file's grid, stays as it is."""
        self._forecast_of = None
        try:
            runs = form.validate(self.values())
        except ConfigError:
            return  # the status line says what is wrong already
        self._request_forecast(runs)

    def _request_forecast(self, runs: list[GridRun]) -> None:
        """Forecast the form's grid on a worker thread once the form has rested for FORECAST_AFTER_S (typing
        "0.003" asks once, not five times): earlier runs are read from the store, and a model with none is
        calibrated in a child process (seconds; the app's Calibrator stops an older one); the newest wins."""
        keys, force = tuple(run.settings_key() for run in runs), self.force
        if self._forecast_of == (keys, force) or self._forecast_held:
            return
        self._forecast_generation += 1
        generation, db, calibrate, queued = self._forecast_generation, self.db, self.calibrate, self.queued_keys
        self.query_one("#setup-forecast", Static).update(Content("forecast: …"))

        def make() -> None:
            time.sleep(FORECAST_AFTER_S)
            if generation != self._forecast_generation:
                return  # the form changed again meanwhile: only the newest is forecast
            try:
                made = preview(runs, db, force=force, queued_keys=queued(), calibrate=calibrate).forecast
            except Exception as exc:  # noqa: BLE001 - a forecast that cannot be made says why and runs nothing
                self.post_message(self.ForecastMade(generation, keys, force, None, f"{type(exc).__name__}: {exc}"))
                return
            self.post_message(self.ForecastMade(generation, keys, force, made))

        self.run_worker(make, name="forecast", group="forecast", thread=True, exit_on_error=False)

    @on(ForecastMade)
    def _forecast_made(self, message: ForecastMade) -> None:
        if message.generation != self._forecast_generation:
            return  # the form changed since: its own forecast is on the way
        self.forecast, self._forecast_of = message.forecast, (message.keys, message.force)
        shown = self.query_one("#setup-forecast", Static)
        if message.forecast is None:
            shown.update(Content(f"forecast: none ({message.problem})"))
            return
        text = f"forecast: {message.forecast.describe()}"
        if message.forecast.too_long:
            text += f"; {forecast_module.too_long_text(message.forecast)}: ctrl+r asks first"
        shown.update(Content(text))
        shown.set_class(message.forecast.too_long, "-warning")

    def forecast_for(self, runs: list[GridRun]) -> Forecast | None:
        """The latest forecast, if it was made for exactly these runs (and this force)."""
        keys = tuple(run.settings_key() for run in runs)
        return self.forecast if self._forecast_of == (keys, self.force) else None

    def _mark(self, field_name: str | None) -> None:
        if not field_name:
            return
        first = field_name.split(".")[0]
        candidates = [f"#f-{field_name.replace('.', '-')}", f"#f-{first}"]
        if first == "techniques":
            candidates.append("#f-combinations")
        for selector in candidates:
            found = self.query(selector)
            if found:
                found.first().add_class("-invalid")
                return

    @on(Input.Changed)
    @on(Select.Changed)
    @on(Checkbox.Changed)
    @on(SelectionList.SelectedChanged)
    def _changed(self, event: Message) -> None:
        control = getattr(event, "control", None)
        if self._ready and getattr(control, "id", None) == "f-force":  # forced runs are no longer skipped
            self.check()
        if not self._ready or getattr(control, "id", None) in ("f-file", "f-force"):
            return
        if getattr(control, "id", None) != "f-ray":  # where the grid runs is no setting of its runs
            values = self.values()
            if values == self._checked:
                return  # a field set to what it held (the form's own start-up sends a dozen of these)
            self.check()
            self.mark_changed()
        if getattr(control, "id", None) == "f-dataset":
            self.show_model_inputs()
        self.post_message(self.FormChanged())  # kept in the preferences

    # -- actions --------------------------------------------------------------------------------------
    @on(Button.Pressed, "#run-selection")
    def action_run_selection(self) -> None:
        runs = self.check()
        if runs is None:
            self.app.notify(self.problem or "", title="Not run", severity="error", markup=False)
            return
        self.post_message(
            self.GridRequested(
                runs,
                self.force,
                "the setup form",
                self.ray_address,
                form.declared_plan(self.values(), runs),
                self.forecast_for(runs),
            )
        )

    @on(Button.Pressed, "#load-file")
    @on(Input.Submitted, "#f-file")
    def action_load_file(self) -> None:
        path = self.query_one("#f-file", Input).value.strip() or "experiments.toml"
        status = self.query_one("#setup-status", Static)
        try:
            grid_file = load_grid(path)
            runs = grid_file.grid()
        except ConfigError as exc:
            status.update(Content(str(exc)))
            status.set_class(True, "-error")
            self.app.notify(str(exc), title="Not loaded", severity="error", markup=False)
            return
        status.update(Content(f"{path}: {len(runs)} runs: forecasting, then queued"))
        status.set_class(False, "-error")
        request = self.GridRequested(runs, self.force, path, self.ray_address, grid_file.plan(runs))
        db, calibrate, queued = self.db, self.calibrate, self.queued_keys

        def forecast_then_request() -> None:
            # The file's grid may be long: it is forecast first (off the UI thread), so a day or more asks.
            try:
                request.forecast = preview(
                    runs, db, force=request.force, queued_keys=queued(), calibrate=calibrate
                ).forecast
            except Exception:  # noqa: BLE001 - without a forecast the grid is queued as before
                request.forecast = None
            told = f"{path}: {request.forecast.describe()}" if request.forecast else f"{path}: {len(runs)} runs"
            self.app.call_from_thread(status.update, Content(told))
            self.post_message(request)

        self.run_worker(forecast_then_request, name="file-forecast", group="file-forecast", thread=True)


def _value(widget: Any) -> Any:
    """A form field's value: an Input's text, a Select's choice, a Checkbox's tick."""
    return widget.value

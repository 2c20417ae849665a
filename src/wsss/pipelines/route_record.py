"""``OUT/route.json``, the record of a route (:mod:`wsss.pipelines.route`): its settings checked against those
recorded, whether their first step finished, and where OUT and the start files were."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wsss.core.errors import UsageError
from wsss.pipelines.route_data import data_files, data_files_change, legacy_data_files
from wsss.pipelines.route_values import FIRST_STEP_DONE, OWN_OUTPUTS, ROUTE_FILE, START_FILE_KEYS, resolved_file
from wsss.pipelines.steps import changed_settings, computed_words


class RouteRecord:
    """``OUT/route.json`` of a :class:`Route`: its settings (its inputs and options, where they run excepted), checked
    against those recorded (others refused, naming them, unless ``overwrite``), whether their first step finished,
    and where OUT and the start files were (what a rerun from elsewhere re-bases)."""

    def __init__(self, route: Any) -> None:  # the Route of pipelines.route (which imports this module)
        self.route, self.opts, self.out, self.runner, self.say = route, route.opts, route.out, route.runner, route.say
        self.first_step_done = False  # whether route.json's settings have passed the step that reads the inputs
        self.start_files: dict[str, str] = {}  # each start file of the overrides (resolved) -> its content digest
        self.as_given: dict[str, str] = {}  # a start file's word by content -> the word as given

    def settings(self) -> dict[str, Any]:
        """What decides the route's outputs (``route.json``): its inputs and options, where they run excepted."""

        def resolved(path: str | None) -> str | None:
            return None if path is None else str(Path(path).resolve())

        given = (self.opts.data, self.opts.labels, self.opts.classes, self.opts.masks)
        photos = (
            [Path(self.opts.data)] if self.route._prepares() else []
        )  # a folder of photos: its top, as they are read
        return {
            "data": resolved(self.opts.data),
            "labels": resolved(self.opts.labels),
            "classes": resolved(self.opts.classes),
            "masks": resolved(self.opts.masks),
            "data_files": data_files([Path(p) for p in given if p], self.out, flat=photos),
            "classifier": self.opts.classifier,
            "seg": self.opts.seg,
            "stage": self.opts.stage,
            "folds": self.opts.folds,
            "cls_overrides": self._by_content(computed_words(self.route.words["cls"])),
            "seg_overrides": self._by_content(computed_words(self.route.words["seg"])),
            # a CLIP mode's words (its files among them): none in the route without CLIP, whose record stays as it was
            **(
                {"clip_overrides": self._by_content(computed_words(self.route.words["clip"]))}
                if self.route.mode.mode.method_words
                else {}
            ),
            # the candidates past the first labels, recorded where given: a record without them is the plain route's
            **({"rounds": self.opts.rounds} if self.opts.rounds else {}),
            **({"abstain": True} if self.opts.abstain else {}),
        }

    def _by_content(self, words: list[str]) -> list[str]:
        """``words`` with each start file that is there (:data:`START_FILE_KEYS`) named by its content
        (``model.pretrained=content:1a2b...``; :attr:`start_files`): a file moved with its content kept is the same
        setting, its new place re-based into the route's runs (:meth:`rebase`)."""
        from wsss.runs.stamps import content_digest

        named = []
        for word in words:
            key, _, value = word.partition("=")
            path = Path(value.strip()).expanduser()
            if key.strip() in START_FILE_KEYS and value.strip() and path.exists():
                where = str(path.resolve())
                self.start_files.setdefault(where, content_digest(path))
                typed = {resolved_file(v): v for v in (self.opts.clip, self.opts.dinov2) if v}.get(value, value)
                self.as_given[f"{key}=content:{self.start_files[where]}"] = f"{key}={typed}"  # as an older wsss had it
                word = f"{key}=content:{self.start_files[where]}"
            named.append(word)
        return named

    def _as_recorded(self, mine: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
        """``mine`` as a record of an older wsss names what this one names by content, where that record names the
        same: the data files by their names, sizes and times (:func:`legacy_data_files`), the start files by path."""
        same = dict(mine)
        old = theirs.get("data_files")
        given = [Path(p) for p in (self.opts.data, self.opts.labels, self.opts.classes, self.opts.masks) if p]
        if isinstance(old, dict) and set(old) == {"files", "sha1"} and old == legacy_data_files(given, self.out):
            same["data_files"] = old
        for key in ("cls_overrides", "seg_overrides", "clip_overrides"):
            by_path = [self.as_given.get(w, w) for w in mine.get(key) or []]
            if key in mine and theirs.get(key) == by_path:
                same[key] = by_path
        return same

    def write(self, settings: dict[str, Any]) -> None:
        """``OUT/route.json``: the settings, whether their first step finished, where OUT and the start files were
        (what a rerun from elsewhere re-bases: :meth:`rebase`)."""
        self.runner.record(
            settings,
            **{FIRST_STEP_DONE: self.first_step_done},
            out=str(self.out.resolve()),
            start_files=self.start_files,
        )

    def rebase(self) -> None:
        """OUT moved or copied since the record, or a start file moved with its content kept: the paths its runs'
        configs and its stamps record re-based (``pipelines.steps.rebase_paths``), so that the route continues."""
        from wsss.pipelines.steps import rebase_paths

        moves, was = {}, self.runner.recorded_field("out")
        if isinstance(was, str) and was != str(self.out.resolve()):
            moves[was] = str(self.out.resolve())
        recorded = self.runner.recorded_field("start_files")
        before = {d: p for p, d in recorded.items()} if isinstance(recorded, dict) else {}
        moves |= {before[d]: p for p, d in self.start_files.items() if before.get(d, p) != p}
        rewritten = rebase_paths(self.out, moves)
        for old, new in moves.items():
            self.say(f"route: {old} is now {new}: re-based in {len(rewritten)} files of its runs")

    def refuse_a_foreign_out(self) -> None:
        """OUT is a new folder, an empty one, or a route's: a folder of other files is refused (before the route's
        lock file is put there). Its lock alone is a route's that stopped before its record (killed; or running:
        the lock then says so)."""
        from wsss.utils.runlock import LOCK_FILE

        others = sorted(p.name for p in self.out.iterdir() if p.name != LOCK_FILE) if self.out.is_dir() else []
        if not (self.out / ROUTE_FILE).is_file() and others:
            shown = ", ".join(others[:4])
            raise UsageError(
                f"{self.out}: --out is a folder that holds files ({shown}) but no route ({ROUTE_FILE}); "
                "give a new or empty folder"
            )

    def settle(self) -> dict[str, Any]:
        """This route's settings (:meth:`settings`), checked against those ``OUT/route.json`` records
        (:meth:`StepRunner.settle`: others refused, naming them, unless ``overwrite``). Recorded once the plan has
        taken them (a mistyped override word is then refused unrecorded, and the corrected command is no change of
        settings). Settings whose first step (prepare, or check-data: the one that reads the inputs) never finished
        made nothing: these replace them (a route stopped by bad input continues once the input is fixed)."""
        mine = self.settings()
        theirs = self.runner.recorded()
        compared = mine if theirs is None else self._as_recorded(mine, theirs)
        if theirs is not None and self.runner.recorded_field(FIRST_STEP_DONE) is False:
            if changed_settings(mine, theirs):
                self.say(
                    f"route: its first step never finished with the settings recorded in {self.runner.record_file}"
                    " (nothing was made of them): these replace them"
                )
            self.first_step_done = False
            return mine
        given = [self.opts.data, self.opts.labels, self.opts.classes, self.opts.masks, *(self.opts.images or [])]
        own = (*OWN_OUTPUTS, *self.route._round_dirs())
        self.runner.settle(
            compared,
            overwrite=self.opts.overwrite,
            own=own,
            inputs=[Path(p) for p in given if p],
            shown={"data_files": data_files_change},
        )
        kept = self.runner.kept
        if kept:
            shown = ", ".join(str(p) for p in kept[:3]) + (f" (and {len(kept) - 3} more)" if len(kept) > 3 else "")
            self.say(f"route: --overwrite kept {len(kept)} files that wsss did not make: {shown}")
        self.first_step_done = theirs is not None and not changed_settings(compared, theirs)
        return mine

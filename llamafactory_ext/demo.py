"""Run the whole Uni-MuMER + UniFER pipeline end to end on built-in synthetic data and a tiny model (CPU, offline).

``unitune demo [--out-dir runs/demo]`` chains the real commands, each step exactly as a user would run it:

 1. ``unitune demo-data hmer`` / ``unitune demo-data fer``: rendered formulas, drawn faces;
 2. ``unitune tiny-model``: a tiny random Qwen2.5-VL (the stand-in for Qwen2.5-VL-3B/7B);
 3. ``unitune data hmer --task vanilla|tree|can --register``: the multitask data;
 4. ``unitune edl run``: Error-Driven Learning by 2-fold cross-validation (a fold model trained with
    ``llamafactory-cli train`` per fold, 2 samples per held-out formula, ``error_find``/``error_fix`` registered);
 5. ``llamafactory-cli train recipes/unimumer_qlora.yaml`` (overridden to the tiny model and a few steps),
    then ``llamafactory-cli export recipes/unimumer_merge_lora.yaml``;
 6. ``unitune infer --backend hf`` + ``unitune eval hmer`` on the held-out formulas;
 7. ``unitune data fer-rlvr`` then ``python -m trl_grpo.train --config recipes/unifer_grpo.yaml --smoke`` (2 GRPO
    steps with unitune's rewards on the demo faces), ``unitune infer`` + ``unitune eval fer --protocol both``;
 8. ``unitune eval-all`` over the demo suite (finished inference is reused), then a summary.

Every step is resumable: a re-run skips steps whose outputs are complete. Each step's log is in
``OUT/logs/``. A tiny random model scores near zero: the demo proves the pipeline, not accuracy.
A step whose command is not available in this version is reported as "not built yet" and skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluators.cli import add_out_dir
from evaluators.errors import UserError
from evaluators.io_utils import atomic_write_json, atomic_write_text

__all__ = [
    "CPU_TRAIN_SETTINGS",
    "StepResult",
    "add_arguments",
    "cli_overrides",
    "format_report",
    "run",
    "run_demo",
]

logger = logging.getLogger(__name__)

_REPO_ROOT = Path(__file__).resolve().parents[1]
_HMER_TASKS = ("vanilla", "tree", "can", "error_find", "error_fix")
_EDL_STEP = "unitune edl run (EDL: 2 folds, 2 samples)"
_NEAR_ZERO = (
    "The model here is a tiny RANDOM Qwen2.5-VL trained for a few steps on a CPU: its scores are near zero by\n"
    "design. The demo proves that every stage of the pipeline runs and hands its outputs to the next one;\n"
    "it says nothing about accuracy. Run the same commands with Qwen2.5-VL-3B/7B and the real data on a GPU\n"
    "(see README) to reproduce the papers."
)


@dataclass
class StepResult:
    """One demo step: its status (done, reused, skipped, not built yet, failed), time and outputs."""

    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    outputs: list[str] = field(default_factory=list)


def _recipe(name: str) -> Path:
    from llamafactory_ext.assets import asset_path

    path = asset_path(f"recipes/{name}")
    if path is None or not path.is_file():
        raise UserError(
            f"recipes/{name} is not installed with unitune; reinstall it (`unitune recipes` lists them)."
        )
    return path


def _llamafactory_cli() -> str | None:
    beside = Path(sys.executable).parent / "llamafactory-cli"
    return str(beside) if beside.is_file() else shutil.which("llamafactory-cli")


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        TOKENIZERS_PARALLELISM="false",
        WANDB_DISABLED="true",
        PYTHONUNBUFFERED="1",
    )
    return env


@contextlib.contextmanager
def _captured(log_path: Path):
    """Send logging, stdout and stderr of an in-process command to ``log_path``."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    saved = root.handlers[:]
    with log_path.open("a", encoding="utf-8") as handle:
        handler = logging.StreamHandler(handle)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.handlers = [handler]
        try:
            with contextlib.redirect_stdout(handle), contextlib.redirect_stderr(handle):
                yield
        finally:
            root.handlers = saved


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _say(text: str) -> None:
    """The demo's console output (progress lines and the final report)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


#: LLaMA-Factory settings that fit the recipes' training to a CPU and the tiny model: the one source of the
#: EDL config's ``train:`` section and of the ``llamafactory-cli train`` overrides of the SFT step.
CPU_TRAIN_SETTINGS: dict[str, Any] = {
    "bf16": False,
    "per_device_train_batch_size": 2,
    "gradient_accumulation_steps": 1,
    "image_max_pixels": 12544,
    "image_min_pixels": 3136,
    "preprocessing_num_workers": 1,
    "dataloader_num_workers": 0,
    "logging_steps": 1,
    "save_steps": 1000,
    "cutoff_len": 512,
    "warmup_ratio": 0,
    "plot_loss": False,
}


def cli_overrides(settings: dict[str, Any]) -> list[str]:
    """``key=value`` arguments of ``llamafactory-cli`` for ``settings``, values spelt as YAML reads them back.

    Example:

    >>> cli_overrides({"bf16": False, "deepspeed": None, "max_steps": 1, "warmup_ratio": 0, "output_dir": Path("o")})
    ['bf16=false', 'deepspeed=null', 'max_steps=1', 'warmup_ratio=0', 'output_dir=o']
    """

    def spell(value: Any) -> str:
        if value is None:
            return "null"
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    return [f"{key}={spell(value)}" for key, value in settings.items()]


class _Demo:
    def __init__(self, out: Path, n_hmer: int, n_fer: int, train_steps: int, max_new_tokens: int) -> None:
        self.out = out.resolve()
        self.n_hmer, self.n_fer = n_hmer, n_fer
        self.train_steps, self.max_new_tokens = train_steps, max_new_tokens
        self.results: list[StepResult] = []
        self.logs = self.out / "logs"
        self.hmer_data = self.out / "data" / "hmer"
        self.fer_data = self.out / "data" / "fer"
        self.tiny = self.out / "tiny_model"
        self.edl_dir = self.out / "edl"
        self.lf_data = self.out / "lf_data"
        self.sft = self.out / "sft_qlora"
        self.merged = self.out / "merged"
        self.grpo = self.out / "grpo_fer"
        self.eval = self.out / "eval"
        self.suite = self.out / "demo_suite.yaml"

    # -- helpers -------------------------------------------------------------------------------------------
    def step(
        self, name: str, action: Callable[[], StepResult | None], needs: Sequence[str] = ()
    ) -> StepResult:
        number = len(self.results) + 1
        missing = [n for n in needs if not self.ok(n)]
        if missing:
            result = StepResult(name, "skipped", detail=f"needs {', '.join(missing)}")
        else:
            _say(f"[{number:2d}] {name} ...")
            start = time.monotonic()
            try:
                result = action() or StepResult(name, "done")
            except UserError as err:
                result = StepResult(name, "failed", detail=str(err))
            except subprocess.CalledProcessError as err:
                result = StepResult(name, "failed", detail=f"exit status {err.returncode}")
            result.name = name
            result.seconds = time.monotonic() - start
        self.results.append(result)
        line = f"     {result.status} ({result.seconds:.1f} s)"
        _say(line + (f": {result.detail}" if result.detail else ""))
        return result

    def ok(self, name: str) -> bool:
        return any(r.name == name and r.status in ("done", "reused") for r in self.results)

    def unitune(self, argv: list[str], log: str) -> None:
        """Run a ``unitune`` command in-process (the real CLI function), its output in ``logs/<log>.log``."""
        from evaluators.cli import main as unitune_main

        log_path = self.logs / f"{log}.log"
        with _captured(log_path):
            logging.getLogger("unitune").info("$ unitune %s", " ".join(argv))
            status = unitune_main(argv)
        if status != 0:
            raise UserError(
                f"`unitune {' '.join(argv[:2])}` exited with {status}; see {log_path}:\n{_tail(log_path)}"
            )

    def shell(self, argv: list[str], log: str) -> None:
        """Run an external command (llamafactory-cli, python -m ...), output in ``logs/<log>.log``."""
        log_path = self.logs / f"{log}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as handle:
            handle.write("$ " + " ".join(argv) + "\n")
            handle.flush()
            status = subprocess.run(
                argv, stdout=handle, stderr=subprocess.STDOUT, env=_env(), cwd=_REPO_ROOT, check=False
            ).returncode
        if status != 0:
            raise UserError(
                f"`{' '.join(argv[:3])} ...` exited with {status}; see {log_path}:\n{_tail(log_path)}"
            )

    @staticmethod
    def _complete(folder: Path, *names: str) -> bool:
        return all((folder / name).is_file() for name in names)

    @classmethod
    def _complete_model(cls, folder: Path) -> bool:
        """A saved model folder: config, weights and the processor file (transformers 5 names it
        ``processor_config.json``; 4.x wrote ``preprocessor_config.json``)."""
        return cls._complete(folder, "config.json", "model.safetensors") and any(
            (folder / name).is_file() for name in ("processor_config.json", "preprocessor_config.json")
        )

    @staticmethod
    def _fresh(folder: Path) -> None:
        """Start a step's output folder from scratch (LLaMA-Factory silently resumes into an existing one)."""
        if folder.exists():
            shutil.rmtree(folder)

    # -- steps ---------------------------------------------------------------------------------------------
    def demo_data_hmer(self) -> StepResult:
        test = self.hmer_data / "hmer_demo_test.json"
        if test.is_file():
            return StepResult("", "reused", outputs=[str(self.hmer_data)])
        self.unitune(
            ["demo-data", "hmer", "--n", str(self.n_hmer), "--out-dir", str(self.hmer_data)],
            "01_demo_data_hmer",
        )
        return StepResult("", "done", outputs=[str(self.hmer_data / "hmer_demo_train.json"), str(test)])

    def demo_data_fer(self) -> StepResult:
        qa = self.fer_data / "fer_demo_qa.json"
        if qa.is_file():
            return StepResult("", "reused", outputs=[str(self.fer_data)])
        self.unitune(
            ["demo-data", "fer", "--n", str(self.n_fer), "--out-dir", str(self.fer_data)], "02_demo_data_fer"
        )
        return StepResult("", "done", outputs=[str(self.fer_data / "fer_demo_rlvr.json"), str(qa)])

    def tiny_model(self) -> StepResult:
        if self._complete_model(self.tiny):
            return StepResult("", "reused", outputs=[str(self.tiny)])
        self.unitune(["tiny-model", str(self.tiny)], "03_tiny_model")
        return StepResult("", "done", outputs=[str(self.tiny)])

    def edl(self) -> StepResult:
        """Error-Driven Learning with ``unitune edl run``: 2 folds, a fold model each, 2 samples per image."""
        import yaml

        config = {
            "input": str(self.hmer_data / "hmer_demo_train.json"),
            "name": "demo_hmer",
            "out_dir": str(self.edl_dir),
            "k": 2,
            "model_name_or_path": str(self.tiny),
            # full fine-tuning: the fold model is sampled as it is (a (Q)LoRA recipe adds an export per fold)
            "recipe": str(_recipe("unimumer_crohme.yaml")),
            # the recipe is a multi-GPU one: no DeepSpeed, no activation checkpointing on the CPU
            "train": {
                "deepspeed": None,
                "max_steps": 1,
                "gradient_checkpointing": False,
                **CPU_TRAIN_SETTINGS,
            },
            "sampling": {"n": 2, "temperature": 1.0, "max_new_tokens": self.max_new_tokens},
            "infer_args": ["--backend", "hf"],
            "dataset_dir": str(self.lf_data),
        }
        path = self.out / "edl.yaml"
        text = "# unitune demo: Error-Driven Learning (written by `unitune demo`)\n"
        atomic_write_text(path, text + yaml.safe_dump(config, sort_keys=False))
        self.unitune(["edl", "run", str(path)], "05_edl_run")
        summary = json.loads((self.edl_dir / "edl" / "summary.json").read_text(encoding="utf-8"))
        rows = sum(fold["error_find_rows"] for fold in summary["folds"])
        predictions = sum(fold["predictions"] for fold in summary["folds"])
        correct = sum(fold["correct"] for fold in summary["folds"])
        rate = 100 * (1 - correct / predictions) if predictions else 0.0
        detail = f"{rows} error_find + {rows} error_fix records, fold-model error rate {rate:.0f}%"
        outputs = [str(self.edl_dir / "edl" / f"demo_hmer_{t}.json") for t in ("error_find", "error_fix")]
        return StepResult("", "done", detail=detail, outputs=[str(path), *outputs])

    def build_hmer_data(self) -> StepResult:
        train = self.hmer_data / "hmer_demo_train.json"
        outputs, counts = [], []
        for task in _HMER_TASKS[:3]:
            name = "demo_hmer" if task == "vanilla" else f"demo_hmer_{task}"
            target = self.lf_data / f"{name}.json"
            argv = ["data", "hmer", str(train), str(target), "--task", task, "--register", name]
            argv += ["--dataset-dir", str(self.lf_data), "--absolute-images", "--no-progress"]
            self.unitune(argv, f"04_data_hmer_{task}")
            outputs.append(str(target))
            counts.append(f"{task} {len(json.loads(target.read_text(encoding='utf-8')))}")
        outputs.append(str(self.lf_data / "dataset_info.json"))
        return StepResult("", "done", detail="records: " + ", ".join(counts), outputs=outputs)

    def train_sft(self) -> StepResult:
        if self._complete(self.sft, "adapter_model.safetensors", "adapter_config.json"):
            return StepResult("", "reused", outputs=[str(self.sft)])
        cli = _llamafactory_cli()
        if cli is None:
            return StepResult(
                "", "not built yet", detail="llamafactory-cli not installed (pip install -e '.[train]')"
            )
        self._fresh(self.sft)
        datasets = ",".join("demo_hmer" if t == "vanilla" else f"demo_hmer_{t}" for t in _HMER_TASKS)
        overrides = {
            "model_name_or_path": self.tiny,
            "dataset_dir": self.lf_data,
            "dataset": datasets,
            "output_dir": self.sft,
            "max_steps": self.train_steps,
            **CPU_TRAIN_SETTINGS,
        }
        argv = [cli, "train", str(_recipe("unimumer_qlora.yaml")), *cli_overrides(overrides)]
        self.shell(argv, "06_llamafactory_train")
        loss = self._last_loss()
        return StepResult("", "done", detail=f"{self.train_steps} QLoRA steps{loss}", outputs=[str(self.sft)])

    def _last_loss(self) -> str:
        state = self.sft / "trainer_state.json"
        try:
            history = json.loads(state.read_text(encoding="utf-8"))["log_history"]
            losses = [h["loss"] for h in history if "loss" in h]
            return f", loss {losses[0]:.3f} -> {losses[-1]:.3f}" if losses else ""
        except (OSError, KeyError, ValueError):
            return ""

    def export(self) -> StepResult:
        if self._complete_model(self.merged):
            return StepResult("", "reused", outputs=[str(self.merged)])
        cli = _llamafactory_cli()
        if cli is None:
            return StepResult("", "not built yet", detail="llamafactory-cli not installed")
        self._fresh(self.merged)
        argv = [cli, "export", str(_recipe("unimumer_merge_lora.yaml")), f"model_name_or_path={self.tiny}"]
        argv += [f"adapter_name_or_path={self.sft}", f"export_dir={self.merged}"]
        self.shell(argv, "07_llamafactory_export")
        return StepResult("", "done", outputs=[str(self.merged)])

    def _infer_args(self) -> list[str]:
        return [
            "--backend",
            "hf",
            "--temperature",
            "0",
            "--max-new-tokens",
            str(self.max_new_tokens),
            "--no-progress",
        ]

    def infer_hmer(self) -> StepResult:
        out = self.eval / "demo_hmer_test" / "infer"
        test = self.hmer_data / "hmer_demo_test.json"
        self.unitune(
            ["infer", str(test), "--model", str(self.merged), "--out-dir", str(out), *self._infer_args()],
            "08_infer_hmer",
        )
        return StepResult(
            "",
            "done",
            outputs=[str(out / "hmer_demo_test_infer.jsonl"), str(out / "hmer_demo_test_pred.json")],
        )

    def eval_hmer(self) -> StepResult:
        pred = self.eval / "demo_hmer_test" / "infer" / "hmer_demo_test_pred.json"
        out = self.eval / "demo_hmer_test" / "eval"
        self.unitune(["eval", "hmer", str(pred), "--out-dir", str(out)], "09_eval_hmer")
        metrics = json.loads((out / "hmer_demo_test_metrics.json").read_text(encoding="utf-8"))["metrics"]
        # the JSON holds fractions; the printed detail is in percent, like the paper
        detail = f"ExpRate {100 * metrics['exprate']:.2f}%, edit score {100 * metrics['mean_edit_score']:.2f}"
        return StepResult(
            "", "done", detail=detail, outputs=[str(out / "hmer_demo_test_results.txt"), str(out)]
        )

    def train_grpo(self) -> StepResult:
        if self._complete_model(self.grpo):
            return StepResult("", "reused", outputs=[str(self.grpo)])
        self._fresh(self.grpo)
        grpo_data = self.grpo / "data"
        self.unitune(
            [
                "data",
                "fer-rlvr",
                str(self.fer_data / "fer_demo_rlvr.json"),
                "--image-root",
                str(self.fer_data),
                "--out",
                str(grpo_data),
            ],
            "10_grpo_data",
        )
        argv = [
            sys.executable,
            "-m",
            "trl_grpo.train",
            "--config",
            str(_recipe("unifer_grpo.yaml")),
            "--smoke",
            "--tiny_model",
            "false",
            "--model_name_or_path",
            str(self.tiny),
            "--synthetic_data",
            "false",
            "--dataset_name",
            str(grpo_data),
            "--output_dir",
            str(self.grpo),
            "--max_steps",
            "2",
        ]
        self.shell(argv, "10_grpo_train")
        return StepResult(
            "",
            "done",
            detail="2 GRPO steps (fer_accuracy + think/answer format rewards)",
            outputs=[str(self.grpo)],
        )

    def infer_fer(self) -> StepResult:
        out = self.eval / "demo_fer_test" / "infer"
        qa = self.fer_data / "fer_demo_qa.json"
        argv = [
            "infer",
            str(qa),
            "--model",
            str(self.grpo),
            "--out-dir",
            str(out),
            "--image-root",
            str(self.fer_data),
        ]
        self.unitune([*argv, *self._infer_args()], "11_infer_fer")
        return StepResult(
            "", "done", outputs=[str(out / "fer_demo_qa_infer.jsonl"), str(out / "fer_demo_results.json")]
        )

    def eval_fer(self) -> StepResult:
        results = self.eval / "demo_fer_test" / "infer" / "fer_demo_results.json"
        out = self.eval / "demo_fer_test" / "eval"
        self.unitune(
            ["eval", "fer", str(results), "--protocol", "both", "--out-dir", str(out)], "12_eval_fer"
        )
        accuracy = {}
        for protocol in ("unifer", "strict"):
            doc = json.loads((out / f"fer_demo_{protocol}_metrics.json").read_text(encoding="utf-8"))
            accuracy[protocol] = 100 * doc["overall"]["accuracy"]
        detail = f"accuracy {accuracy['unifer']:.2f}% (UniFER protocol), {accuracy['strict']:.2f}% (strict)"
        return StepResult("", "done", detail=detail, outputs=[str(out)])

    def eval_all(self) -> StepResult:
        datasets = []
        if self.ok("unitune infer (HMER test, merged model)"):
            datasets.append(
                {
                    "name": "Demo HMER test",
                    "task": "hmer",
                    "input": str(self.hmer_data / "hmer_demo_test.json"),
                }
            )
        if self.ok("unitune infer (FER test, GRPO model)"):
            datasets.append(
                {
                    "name": "Demo FER test",
                    "task": "fer",
                    "input": str(self.fer_data / "fer_demo_qa.json"),
                    "image_root": str(self.fer_data),
                }
            )
        suite = {
            "infer": {"temperature": 0, "max_new_tokens": self.max_new_tokens},
            "datasets": datasets,
        }
        import yaml

        atomic_write_text(
            self.suite,
            "# unitune demo suite (written by `unitune demo`)\n" + yaml.safe_dump(suite, sort_keys=False),
        )
        argv = [
            "eval-all",
            "--config",
            str(self.suite),
            "--out-dir",
            str(self.eval),
            "--backend",
            "hf",
            "--no-progress",
        ]
        argv += ["--hmer-model", str(self.merged), "--fer-model", str(self.grpo)]
        self.unitune(argv, "13_eval_all")
        return StepResult(
            "",
            "done",
            outputs=[str(self.suite), str(self.eval / "summary.md"), str(self.eval / "summary.json")],
        )

    # -- run -----------------------------------------------------------------------------------------------
    def run(self) -> list[StepResult]:
        self.out.mkdir(parents=True, exist_ok=True)
        have_llamafactory = _llamafactory_cli() is not None
        s = self.step
        s("unitune demo-data hmer", self.demo_data_hmer)
        s("unitune demo-data fer", self.demo_data_fer)
        s("unitune tiny-model", self.tiny_model)
        if _module_available("llamafactory_ext.hmer.cli"):
            s("unitune data hmer (3 tasks)", self.build_hmer_data, ["unitune demo-data hmer"])
        else:
            self.results.append(StepResult("unitune data hmer (3 tasks)", "not built yet"))
        if have_llamafactory:
            s(_EDL_STEP, self.edl, ["unitune demo-data hmer", "unitune tiny-model"])
            s("llamafactory-cli train (QLoRA)", self.train_sft, ["unitune data hmer (3 tasks)", _EDL_STEP])
            s("llamafactory-cli export (merge)", self.export, ["llamafactory-cli train (QLoRA)"])
        else:
            for name in (_EDL_STEP, "llamafactory-cli train (QLoRA)", "llamafactory-cli export (merge)"):
                self.results.append(
                    StepResult(name, "not built yet", detail="llamafactory-cli is not installed")
                )
        s("unitune infer (HMER test, merged model)", self.infer_hmer, ["llamafactory-cli export (merge)"])
        if _module_available("evaluators.hmer.cli"):
            s("unitune eval hmer", self.eval_hmer, ["unitune infer (HMER test, merged model)"])
        else:
            self.results.append(StepResult("unitune eval hmer", "not built yet"))
        if _module_available("trl_grpo.train"):
            s(
                "trl_grpo.train (GRPO, 2 steps)",
                self.train_grpo,
                ["unitune demo-data fer", "unitune tiny-model"],
            )
        else:
            self.results.append(StepResult("trl_grpo.train (GRPO, 2 steps)", "not built yet"))
        s("unitune infer (FER test, GRPO model)", self.infer_fer, ["trl_grpo.train (GRPO, 2 steps)"])
        if _module_available("evaluators.fer.cli"):
            s("unitune eval fer --protocol both", self.eval_fer, ["unitune infer (FER test, GRPO model)"])
        else:
            self.results.append(StepResult("unitune eval fer --protocol both", "not built yet"))
        if _module_available("evaluators.hmer.cli") and _module_available("evaluators.fer.cli"):
            s("unitune eval-all (demo suite)", self.eval_all)
        else:
            self.results.append(StepResult("unitune eval-all (demo suite)", "not built yet"))
        return self.results


def format_report(results: Sequence[StepResult], out: Path, total_seconds: float) -> str:
    """The demo's closing report: steps, the metrics table, every artefact, and what the numbers mean.

    Example:

    >>> text = format_report([StepResult("unitune tiny-model", "done", 1.5, outputs=["/x/tiny"])], Path("/x"), 2.0)
    >>> "| unitune tiny-model | done | 1.5 s |" in text and "/x/tiny" in text and "near zero" in text
    True
    """
    lines = [
        "",
        "=" * 100,
        "unitune demo: summary",
        "=" * 100,
        "",
        "| Step | Status | Time | Detail |",
        "|---|---|---|---|",
    ]
    for result in results:
        detail = result.detail.splitlines()[0] if result.detail else ""
        lines.append(f"| {result.name} | {result.status} | {result.seconds:.1f} s | {detail} |")
    lines.append(f"\nTotal: {total_seconds:.0f} s")
    summary = out / "eval" / "summary.md"
    if summary.is_file():
        lines += [
            "",
            "Scores (unitune eval-all on the demo test sets):",
            "",
            summary.read_text(encoding="utf-8").rstrip(),
        ]
    lines += ["", "Artefacts:"]
    for result in results:
        for path in result.outputs:
            lines.append(f"  {result.name:42s} {path}")
    lines.append(f"  {'logs of every step':42s} {out / 'logs'}")
    lines += ["", _NEAR_ZERO, ""]
    return "\n".join(lines)


def run_demo(
    out: Path, n_hmer: int = 48, n_fer: int = 16, train_steps: int = 4, max_new_tokens: int = 24
) -> list[StepResult]:
    """Run (or resume) the demo into ``out`` and return the step results."""
    return _Demo(out, n_hmer, n_fer, train_steps, max_new_tokens).run()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``unitune demo``."""
    add_out_dir(parser, "output folder (default: %(default)s)", default=Path("runs/demo"))
    parser.add_argument("--n-hmer", type=int, default=48, help="training formulas to render (default 48)")
    parser.add_argument("--n-fer", type=int, default=16, help="training faces for GRPO (default 16)")
    parser.add_argument("--train-steps", type=int, default=4, help="QLoRA SFT steps (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=24, help="tokens per generation (default 24)")
    parser.add_argument("--fresh", action="store_true", help="delete --out-dir first instead of resuming")


def run(args: argparse.Namespace) -> int:
    """Run ``unitune demo``; exit 1 when a step failed (steps not built yet are skipped, exit 0)."""
    if args.fresh and args.out_dir.exists():
        shutil.rmtree(args.out_dir)
    start = time.monotonic()
    results = run_demo(args.out_dir, args.n_hmer, args.n_fer, args.train_steps, args.max_new_tokens)
    total = time.monotonic() - start
    report = format_report(results, args.out_dir.resolve(), total)
    atomic_write_text(args.out_dir / "demo_summary.md", report)
    atomic_write_json(
        args.out_dir / "demo_summary.json",
        {"seconds": total, "steps": [r.__dict__ for r in results]},
    )
    _say(report)
    failed = [r for r in results if r.status == "failed"]
    for result in failed:
        logger.error("step failed: %s: %s", result.name, result.detail)
    return 1 if failed else 0

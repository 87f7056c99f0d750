"""The `labgrader` command line: it parses, then hands over to the module that does the work."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from grader import __version__
from grader.common.errors import UserError
from grader.common.names import terminal
from grader.execution.limits import add_limit_flags

DEVICES = ("auto", "cpu", "cuda")
LAYOUTS = ("auto", "canvas", "moodle", "folders")
EXPORT_TARGETS = ("canvas", "moodle", "gradescope")
EXECUTORS = ("local", "dask")


class Parser(argparse.ArgumentParser):
    """argparse, with what it echoes of the command line (an unknown argument, a bad value) made safe for a terminal."""

    def error(self, message):
        super().error(terminal(message))


def path_text(text: str) -> str:
    """An argparse type for paths: an empty one ("" from a script's unset variable) is a usage error, not "here"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; give a file or folder (. for this one)")
    return text


def _handler(target: str):
    """Import a command's module only when it runs, so `check` never pays for torch."""
    def run(args):
        module, func = target.split(":")
        return getattr(importlib.import_module(module), func)(args)
    return run


def _add_json(p):
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of text (for LMS scripts)")


def _add_spec(p):
    p.add_argument("--spec", type=path_text, metavar="TOML", help="assignment spec (default: the bundled lab 7b spec)")


def _add_execution(p):
    p.add_argument("--data-dir", type=path_text, metavar="DIR",
                   help="Fashion-MNIST IDX files for notebooks (default: $LABGRADER_DATA, else the bundled demo's synthetic data)")
    p.add_argument("--no-sandbox", action="store_true",
                   help="run notebooks without bubblewrap (only for trusted code, when bwrap is missing)")
    add_limit_flags(p)


def _add_service(p):
    g = p.add_argument_group("training service (trains the lab's standard train() calls for the notebooks, memoized)")
    g.add_argument("--no-train-service", action="store_true",
                   help="every notebook trains in its own sandbox, as without labgrader")
    g.add_argument("--train-cache", type=path_text, metavar="DIR",
                   help="the service's memo of trained runs, kept across runs (default: $LABGRADER_TRAIN_CACHE, else ~/.cache/labgrader/train-memo)")
    g.add_argument("--device", choices=DEVICES, default="auto",
                   help="where the service trains: auto uses CUDA when present (default: auto)")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="labgrader",
        description="Reference solver and sandboxed autograder for lab 7b 'Optimizing Neural Networks'.",
        epilog="Exit codes: 0 done; 1 the input was judged and found invalid; 2 usage or I/O error.",
    )
    parser.add_argument("--version", action="version", version=f"labgrader {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # data
    data = sub.add_parser("data", help="Fashion-MNIST files: synthesize or download", description="Fashion-MNIST files in the official IDX format.")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    synth = dsub.add_parser("synth", help="write a synthetic dataset in the exact Fashion-MNIST IDX format",
                            description="Write the four Fashion-MNIST files (gzip IDX) with synthetic images that train like the real task. Deterministic for a seed.")
    synth.add_argument("--out", required=True, type=path_text, metavar="DIR", help="folder to write the four .gz files into")
    synth.add_argument("--train", type=int, default=60000, metavar="N", help="training images (default: 60000)")
    synth.add_argument("--test", type=int, default=10000, metavar="N", help="test images (default: 10000)")
    synth.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (default: 0)")
    synth.set_defaults(func=_handler("reference.synth:synth_command"))
    fetch = dsub.add_parser("fetch", help="download the real Fashion-MNIST files and verify their checksums",
                            description="Download the four official Fashion-MNIST files into the data dir and verify their checksums.")
    fetch.add_argument("--data-dir", type=path_text, metavar="DIR", help="target folder (default: $LABGRADER_DATA, else the user cache dir)")
    fetch.set_defaults(func=_handler("reference.fmnist:fetch_command"))

    # kit
    kit = sub.add_parser("kit", help="the lab kit module students import", description="The lab kit: src/fmnist_utils.py (get_data, build_mlp, train).")
    ksub = kit.add_subparsers(dest="kit_command", metavar="ACTION", required=True)
    kinst = ksub.add_parser("install", help="write DIR/src/fmnist_utils.py, a shim onto the installed kit",
                            description="Write DIR/src/__init__.py and DIR/src/fmnist_utils.py so a notebook in DIR can import the lab kit.")
    kinst.add_argument("dir", type=path_text, metavar="DIR", help="the folder that holds the notebook")
    kinst.add_argument("--force", action="store_true", help="overwrite an existing src/fmnist_utils.py")
    kinst.set_defaults(func=_handler("reference.kit_install:install_command"))

    # reference
    ref = sub.add_parser("reference", help="run or inspect the reference sweep", description="The reference solver: the lr / batch / momentum sweep and its expected answers.")
    rsub = ref.add_subparsers(dest="reference_command", metavar="ACTION", required=True)
    run = rsub.add_parser("run", help="run the sweep (resumable) and write the reference artifact",
                          description="Train every (config, seed) of the spec's sweeps, batched, storing each finished run at once; an interrupted run resumes where it stopped.")
    _add_spec(run)
    run.add_argument("--data-dir", type=path_text, metavar="DIR", help="Fashion-MNIST IDX files (default: $LABGRADER_DATA, else the user cache dir)")
    run.add_argument("--device", choices=DEVICES, default="auto", help="where to train: auto uses CUDA when present (default: auto)")
    run.add_argument("--seeds", type=int, metavar="N", help="number of seeds (default: the spec's)")
    run.add_argument("--epochs", type=int, metavar="N", help="epochs per run (default: the spec's)")
    run.add_argument("--out", default="reference.json", type=path_text, metavar="REF.json", help="artifact path; the run store sits beside it as REF.runs.jsonl (default: reference.json)")
    run.add_argument("--fresh", action="store_true", help="discard stored runs and start over")
    _add_json(run)
    run.set_defaults(func=_handler("reference.sweep:run_command"))
    show = rsub.add_parser("show", help="print optima and tie sets; --plot writes learning curves",
                           description="Print each question's metric table, optimum and tie set from a reference artifact.")
    show.add_argument("ref", type=path_text, metavar="REF", help="reference artifact (JSON)")
    show.add_argument("--plot", type=path_text, metavar="DIR", help="also write learning-curve PNGs, one per sweep, into DIR")
    _add_json(show)
    show.set_defaults(func=_handler("reference.show:show_command"))

    # grade
    grade = sub.add_parser("grade", help="execute, validate and score every submission; write the gradebook",
                           description="Grade a folder of submissions (one folder or one .ipynb per student): gradebook CSV, results JSON, feedback, executed notebooks. Resumes after an interruption.")
    grade.add_argument("submissions", type=path_text, metavar="SUBMISSIONS", help="folder with one sub-folder or <student>.ipynb per student")
    grade.add_argument("--reference", type=path_text, metavar="REF", help="reference artifact (default: the bundled synthetic demo reference)")
    _add_spec(grade)
    grade.add_argument("--out", default="grading-out", type=path_text, metavar="OUT", help="output folder (default: grading-out)")
    grade.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="submissions executed in parallel (default: 1)")
    grade.add_argument("--no-execute", action="store_true", help="score the JSON answer files as submitted, without running notebooks")
    grade.add_argument("--force", action="store_true", help="re-grade every submission, even unchanged finished ones")
    grade.add_argument("--keep-work", action="store_true",
                       help="keep each student's work dir in OUT/.work/ (default: removed as soon as the student is graded)")
    grade.add_argument("--hide-answers", action="store_true", help="feedback says right or wrong, never the expected value")
    grade.add_argument("--layout", choices=LAYOUTS, default="auto",
                       help="how SUBMISSIONS is organised: an LMS bulk download (zip or unpacked) or plain per-student folders (default: auto, detected)")
    grade.add_argument("--overrides", type=path_text, metavar="CSV", help="instructor overrides: CSV with student,question,points,comment")
    grade.add_argument("--data-cache", type=path_text, metavar="DIR",
                       help="where the grader keeps the decoded data and matplotlib's font list for the sandboxes, "
                            "checked each run (default: $LABGRADER_DATA_CACHE, else ~/.cache/labgrader/decoded)")
    grade.add_argument("--no-data-cache", action="store_true",
                       help="each notebook decodes the gzip data files (and lists matplotlib's fonts) itself "
                            "instead of starting from the grader's decoded copy")
    grade.add_argument("--executor", choices=EXECUTORS, default="local",
                       help="where notebooks run: local (-j threads here) or dask (tasks on a Dask cluster; needs --scheduler) (default: local)")
    grade.add_argument("--scheduler", metavar="ADDRESS", help="with --executor dask: the Dask scheduler, e.g. tcp://HOST:8786")
    _add_execution(grade)
    _add_service(grade)
    _add_json(grade)
    grade.set_defaults(func=_handler("grader.grade:grade_command"))

    # check
    check = sub.add_parser("check", help="a student's self-check of a notebook or answer files",
                           description="Check a notebook (executed in the sandbox, or without one where bubblewrap is missing), a 7b_ex*.json "
                                       "file or a folder: each answer valid or not and, for a notebook, consistent with your own runs "
                                       "or not; right / wrong only with --reference. Exit 0 when every file is valid, 1 when any is "
                                       "invalid, 2 for usage or I/O errors.")
    check.add_argument("path", type=path_text, metavar="PATH", help="a .ipynb, a 7b_ex*.json file, or a folder holding them")
    check.add_argument("--no-execute", action="store_true", help="for a notebook: read the JSON files beside it instead of running it")
    check.add_argument("--reveal", action="store_true", help="with --reference: also print the expected answers "
                       "(without it there is nothing to reveal: exit 2)")
    check.add_argument("--reference", type=path_text, metavar="REF", help="a reference artifact your course handed out: right / wrong and points "
                       "for every question (default: none; the optimum and yes/no questions then get no verdict)")
    _add_spec(check)
    _add_execution(check)
    _add_json(check)
    check.set_defaults(func=_handler("grader.check:check_command"))
    # assign
    assign = sub.add_parser("assign", help="write the student handout: the lab notebook, the kit, a README and a zip for the LMS",
                            description="Write the lab 7b handout into OUT: lab7b.ipynb, src/ (the lab kit), README.md for students, "
                                        "and handout.zip with the same files for an LMS upload.")
    assign.add_argument("out", type=path_text, metavar="OUT", help="folder to write into: new, empty, or a previous handout")
    assign.add_argument("--force", action="store_true", help="write into a folder that holds other files too (they are left alone), and replace "
                        "handout files that differ from this handout (an edited lab7b.ipynb)")
    _add_json(assign)
    assign.set_defaults(func=_handler("grader.assign:assign_command"))

    # export
    export = sub.add_parser("export", help="gradebook to Canvas CSV, Moodle CSV or Gradescope results.json",
                            description="Turn a grading output folder into the files an LMS imports.")
    export.add_argument("out", type=path_text, metavar="OUT", help="the output folder of `labgrader grade`")
    export.add_argument("--to", required=True, choices=EXPORT_TARGETS, help="target LMS format")
    export.add_argument("--roster", type=path_text, metavar="CSV", help="class roster (the LMS's own export); students without a submission get --missing")
    export.add_argument("--assignment", metavar="NAME", default="Lab 7b", help="assignment column name in the LMS (default: Lab 7b)")
    export.add_argument("--missing", choices=("zero", "blank"), default="zero", help="grade for roster students with no submission (default: zero)")
    export.add_argument("--dest", type=path_text, metavar="PATH", help="where to write (default: OUT/export/<target>...)")
    _add_json(export)
    export.set_defaults(func=_handler("grader.lms.export:export_command"))

    # review
    review = sub.add_parser("review", help="a local web app to grade the answers flagged for review, by answer group",
                            description="Serve a web app over a graded OUT/: answers to each reviewed question grouped "
                                        "(identical, then similar); one decision per group, written to OUT/review/decisions.jsonl "
                                        "and OUT/overrides.csv; Publish rebuilds grades, feedback and summary without executing.")
    review.add_argument("out", type=path_text, metavar="OUT", help="the output folder of `labgrader grade`")
    review.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1, loopback only)")
    review.add_argument("--port", type=int, default=0, help="port (default: 0, any free port)")
    review.add_argument("--no-browser", action="store_true", help="print the URL only; do not open a browser")
    review.add_argument("--reset", action="store_true", help="move OUT/review/decisions.jsonl aside and start the review over")
    review.add_argument("--reference", type=path_text, metavar="REF", help="reference artifact (default: the one results.json names)")
    review.add_argument("--spec", type=path_text, metavar="TOML", help="assignment spec to re-score with (default: the one results.json names)")
    review.set_defaults(func=_handler("grader.review.command:review_command"))

    # gradescope autograder mode
    gs = sub.add_parser("gradescope", help="run as a Gradescope autograder, or build its upload bundle",
                        description="Grade /autograder/submission into /autograder/results/results.json, as Gradescope runs an autograder.")
    gs.add_argument("action", nargs="?", choices=("run", "build"), default="run",
                    help="run: grade the submission (default); build: write setup.sh and run_autograder into a zip for upload")
    gs.add_argument("--root", default="/autograder", type=path_text, metavar="DIR", help="Gradescope's folder (default: /autograder)")
    gs.add_argument("--reference", type=path_text, metavar="REF", help="reference artifact (default: the bundled synthetic demo reference)")
    gs.add_argument("--dest", type=path_text, metavar="ZIP", default="autograder.zip", help="with build: the bundle to write (default: autograder.zip)")
    _add_spec(gs)
    _add_execution(gs)
    gs.set_defaults(func=_handler("grader.lms.gradescope:gradescope_command"))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "scheduler", None) and getattr(args, "executor", "local") != "dask":
        parser.error("--scheduler is only used with --executor dask")
    try:
        code = args.func(args)
    except UserError as e:
        print(f"labgrader: {terminal(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("labgrader: interrupted; finished work is kept, run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except Exception as e:  # the last line of defence: never a traceback for users
        if os.environ.get("LABGRADER_DEBUG"):
            raise
        print(f"labgrader: internal error: {type(e).__name__}: {terminal(str(e))} (set LABGRADER_DEBUG=1 for the traceback)",
              file=sys.stderr)
        return 2
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())

# Copyright © 2026 mlx-kyutai-is contributors
"""The `mlx-kyutai-is` command: a dispatcher, as mlx_lm/cli.py. Each command is a module that owns
its parser and `main(argv)`; only the chosen one is imported, so `--help`, `--version` and
argument errors are instant (neither MLX nor the model loads here)."""

import argparse
import importlib
import os
import sys

from .._version import __version__
from ..errors import DEBUG_ENV

PROG = "mlx-kyutai-is"
# command -> (module that owns it, one line of help)
COMMANDS = {
    "transcribe": ("mlx_kyutai_is.cli.transcribe", "transcribe or translate audio files (txt, srt, vtt, json)"),
    "mic": ("mlx_kyutai_is.cli.mic", "live transcription from the microphone"),
    "serve": ("mlx_kyutai_is.cli.serve", "OpenAI-compatible speech server with live captions in the browser"),
    "wyoming": ("mlx_kyutai_is.cli.wyoming", "Wyoming speech-to-text server for Home Assistant, words streamed live"),
    "eval": ("mlx_kyutai_is.cli.eval", "WER/CER and BLEU/chrF on a manifest (reproduce the model card)"),
    "convert": ("mlx_kyutai_is.cli.convert", "convert a Hugging Face checkpoint to MLX, optionally quantized"),
    "bench": ("mlx_kyutai_is.cli.bench", "measure speed: ms per step and real-time factor"),
    "codec": ("mlx_kyutai_is.cli.codec", "the Mimi codec alone: audio -> codes -> audio (hear what the model hears)"),
}

DESCRIPTION = """\
Streaming Icelandic speech recognition and Icelandic -> English speech translation with
MLX, running Mideind's fine-tune of Kyutai STT (mideind/kyutai-stt-1b-is-en).

Tasks: "is" writes what was said in Icelandic, "en" translates it to English, "both" does
both at once. The model is downloaded once into the Hugging Face cache and converted in
memory at every start (`convert` saves a converted copy to load with --model DIR)."""

EXAMPLES = """\
examples:
  mlx-kyutai-is mic                              speak Icelandic, read it live
  mlx-kyutai-is mic --task en -o notes.txt       ... read English, keep a transcript
  mlx-kyutai-is transcribe talk.wav              Icelandic text on screen and in ./talk.txt
  mlx-kyutai-is transcribe *.wav -f srt -o subs  subtitles, subs/<name>.srt
  mlx-kyutai-is transcribe talk.mp3 --task both -f all
                                                 talk.is.{txt,srt,vtt,json} and talk.en.*
  sox -d -t wav - | mlx-kyutai-is transcribe -   audio from stdin
  mlx-kyutai-is convert --help                   make a local (quantized) MLX copy
  mlx-kyutai-is <command> --help                 all options of a command"""


class _TopFormatter(argparse.RawDescriptionHelpFormatter):
    """Leaves room for the indented command names (argparse measures them unindented)."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max(map(len, action.choices)) + self._current_indent + 2 * self._indent_increment
            self._action_max_length = max(self._action_max_length, longest)


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser: help, version, and the commands (each parses its own options)."""
    parser = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION, epilog=EXAMPLES, formatter_class=_TopFormatter)
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    parser.add_argument("--debug", action="store_true", help=f"show tracebacks on errors (or set {DEBUG_ENV}=1)")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND", help=f"`{PROG} COMMAND --help` shows its options")
    for name, (_, help) in COMMANDS.items():
        sub.add_parser(name, help=help, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `mlx-kyutai-is` script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in argv:  # anywhere on the line; the commands read it from the environment
        argv.remove("--debug")
        os.environ[DEBUG_ENV] = "1"
    if argv and argv[0] in COMMANDS:
        sys.argv[0] = f"{PROG} {argv[0]}"
        return importlib.import_module(COMMANDS[argv[0]][0]).main(argv[1:]) or 0
    parser = build_parser()
    parser.parse_args(argv)  # --help, --version, or an unknown command (exit 2)
    parser.print_help()
    return 2

# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is mic`: live transcription (or translation) from the microphone."""

import argparse

from ..apps import mic
from ..atomic import check_writable_dir
from .common import add_model_args, load_model, parser, positive_float, run


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "mic",
        description="Listen to the microphone and print the text live: confirmed words, then the\n"
        "words still being decided (dimmed), one line per utterance (a voice-activity detector\n"
        "finds the pauses). The text lags the speech by a few seconds (the model's delay).\n"
        "Ctrl-C stops: the last words are flushed and the files are written.",
        epilog="examples:\n"
        "  mlx-kyutai-is mic --task en\n"
        "  mlx-kyutai-is mic --list-devices\n"
        "  mlx-kyutai-is mic --device 2 -o notes.txt --save-audio rec.wav\n"
        "  mlx-kyutai-is mic --timestamps -o notes.txt\n"
        "  mlx-kyutai-is mic --task both -o meeting.srt",
    )
    add_model_args(p)
    p.add_argument("--device", "-d", default=None, help="input device, by index or (part of its) name; default: the system's")
    p.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    p.add_argument(
        "--output",
        "-o",
        default=None,
        metavar="FILE",
        help="write the transcript: .txt (as words come), .srt, .vtt or .json (at the end); "
        "--task both writes FILE.is.ext and FILE.en.ext",
    )
    p.add_argument(
        "--save-audio",
        default=None,
        metavar="FILE",
        help="also record the audio to this file: .wav, .flac or .ogg (renamed into place when it ends)",
    )
    p.add_argument(
        "--timestamps",
        action="store_true",
        help="begin each line with its time since the start, [HH:MM:SS.d] (on screen and in a .txt transcript)",
    )
    p.add_argument(
        "--pause",
        type=positive_float,
        default=0.5,
        metavar="SECONDS",
        help="silence that ends an utterance, i.e. starts a new line (default: %(default)s); "
        "the watchdog also waits for such a pause to re-prime",
    )
    p.add_argument(
        "--max-lag",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="when the model falls this far behind real time, drop audio instead of falling further behind "
        "(the recording keeps everything)",
    )
    p.add_argument(
        "--no-watchdog",
        dest="watchdog",
        action="store_false",
        help="do not re-prime the model when it stalls (no words while someone speaks, or one word repeated)",
    )
    p.add_argument("--input-file", default=None, metavar="FILE", help=argparse.SUPPRESS)  # replay a file as the mic
    p.add_argument("--unpaced", action="store_true", help=argparse.SUPPRESS)  # ... as fast as the model goes
    return p


def listen(args) -> int:
    if args.list_devices:
        print(mic.list_devices())
        return 0
    # outputs and the device (or file) are checked before loading the model: fail fast
    for path in mic.output_files(args.task, args.output, args.save_audio, args.input_file):
        check_writable_dir(path.parent)
    if args.input_file is not None:
        source = mic.FileSource(args.input_file, paced=not args.unpaced)
    else:
        source = mic.SoundDeviceSource(args.device)
    stt = load_model(args)
    mic.run_mic(
        stt,
        args.task,
        source,
        output=args.output,
        save_audio=args.save_audio,
        max_lag=args.max_lag,
        stream_kwargs={"watchdog": args.watchdog},
        timestamps=args.timestamps,
        pause=args.pause,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    # run_mic handles Ctrl-C and SIGTERM itself: the last words are flushed and the files written.
    p = configure_parser()
    args = p.parse_args(argv)
    return run(p.prog, lambda: listen(args))

# Copyright © 2026 mlx-kyutai-is contributors
"""`mlx-kyutai-is codec`: the model's Mimi codec on its own: audio -> codes, codes -> audio, and both
(to hear what the model hears). Everything streams: memory does not grow with the length."""

import argparse
import sys
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, commit_file
from ..audio import AudioWriter, iter_audio_blocks, recording_format
from ..errors import UserError
from ..models.codec import CodecError, MimiCodec, load_codec
from ..stt import DEFAULT_MODEL
from .common import note, parser, run, sigterm_raises

# Input audio is read, and codes decoded, this much at a time.
BLOCK_SECONDS = 2.0


def configure_parser() -> argparse.ArgumentParser:
    p = parser(
        "codec",
        description="The model's Mimi codec on its own (24 kHz mono, 12.5 code frames a second).\n"
        "  encode IN -o codes.npy   audio (any format and rate `transcribe` reads) -> codes, int16\n"
        "                           (1, num_codebooks, frames), as transformers and moshi lay them out\n"
        "  decode codes.npy -o OUT  codes -> 24 kHz audio (.wav, .flac or .ogg), frames x 80 ms\n"
        "  roundtrip IN -o OUT      both: the audio as the model hears it, as long as the input\n"
        "Ctrl-C (or SIGTERM) keeps what was done in <name>.partial.<ext>.",
        epilog="examples:\n"
        "  mlx-kyutai-is codec roundtrip talk.mp3 -o heard.wav\n"
        "  mlx-kyutai-is codec encode talk.wav -o talk.npy --num-codebooks 8      1.1 kbps\n"
        "  mlx-kyutai-is codec decode talk.npy -o talk.8.wav",
    )
    p.add_argument("action", choices=("encode", "decode", "roundtrip"), help="what to do")
    p.add_argument("input", metavar="IN", help="audio file (- reads stdin), or a codes .npy for decode")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="codes .npy (encode) or audio file")
    p.add_argument(
        "--num-codebooks",
        "-n",
        type=int,
        default=None,
        metavar="N",
        help="codebooks to keep, 1 to 32 (default 32, what the model reads; 8 is the model card's codec)",
    )
    p.add_argument(
        "--model",
        "-m",
        default=DEFAULT_MODEL,
        help="Hugging Face repo id, or a local directory (a Hugging Face checkpoint or one made by `convert`)",
    )
    return p


def _partial(path: Path) -> Path:
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _check_paths(args) -> Path:
    out = Path(args.output).expanduser()
    if args.input != "-" and Path(args.input).expanduser().resolve() == out.resolve():
        raise UserError(f"{out}: the output would overwrite the input")
    if out.is_dir():
        raise UserError(f"{out}: is a directory (name the output file)")
    if not out.parent.is_dir():
        raise UserError(f"{out}: no such directory {out.parent}")
    if args.action == "encode":
        if out.suffix.lower() != ".npy":
            raise UserError(f"{out}: codes are written as a NumPy .npy file (name it .npy)")
    else:
        recording_format(out)
    return out


def read_codes(path: str, codec: MimiCodec) -> np.ndarray:
    """The codes of a .npy file, validated: (1, K, frames) int32. Raises `CodecError` naming the file."""
    try:
        a = np.load(path, allow_pickle=False)
    except (ValueError, EOFError) as e:  # not .npy, truncated, or pickled objects
        msg = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CodecError(f"{path}: not a NumPy .npy file of codes ({msg})") from None
    if not isinstance(a, np.ndarray):
        a.close()
        raise CodecError(f"{path}: an .npz archive; expected a .npy array of codes (1, num_codebooks, frames)")
    codes = codec.check_codes(a, name=path)
    if codes.shape[0] != 1:
        raise CodecError(f"{path}: codes for {codes.shape[0]} signals (shape {a.shape}); expected one")
    if codes.shape[2] == 0:
        raise CodecError(f"{path}: no frames (shape {a.shape})")
    return codes


def _codes_dtype(codec: MimiCodec):
    return np.int16 if codec.args.codebook_size <= 2**15 else np.int32


def encode(args, codec: MimiCodec, out: Path) -> None:
    stream = codec.encode_stream(num_codebooks=args.num_codebooks)
    parts, samples = [], 0
    try:
        for block in iter_audio_blocks(args.input, codec.sample_rate, BLOCK_SECONDS):
            parts.append(np.array(stream.feed(block[None])))
            samples += len(block)
        parts.append(np.array(stream.flush()))
    except KeyboardInterrupt:
        if parts:
            _save_codes(_partial(out), parts, codec)
            note(f"saved the codes of the first {samples / codec.sample_rate:.1f} s in {_partial(out)}")
        raise
    codes = _save_codes(out, parts, codec)
    kbps = codes.shape[1] * np.log2(codec.args.codebook_size) * codec.frame_rate / 1e3
    note(f"{out}: {codes.shape[2]} frames x {codes.shape[1]} codebooks ({samples / codec.sample_rate:.2f} s, {kbps:.2f} kbps)")


def _save_codes(path: Path, parts: list, codec: MimiCodec) -> np.ndarray:
    codes = np.concatenate(parts, axis=2).astype(_codes_dtype(codec))
    with atomic_open(path, "wb", encoding=None) as f:
        np.save(f, codes)
    return codes


class _Output:
    """Audio written as it is decoded, to <name>.partial.<ext>, renamed to the output once complete: a
    Ctrl-C or a kill leaves the part decoded so far as a valid file."""

    def __init__(self, out: Path, codec: MimiCodec, limit: int | None = None):
        self.out, self.partial = out, _partial(out)
        self.writer = AudioWriter(self.partial, codec.sample_rate)
        self.sample_rate = codec.sample_rate
        self.limit = limit  # samples to keep at most (a round trip keeps the input's length)

    def write(self, audio) -> None:
        a = np.array(audio)[0]
        if self.limit is not None:
            a = a[: max(0, self.limit - self.writer.frames)]
        if len(a):
            self.writer.write(a)

    def finish(self) -> None:
        self.writer.close()
        commit_file(self.partial, self.out)
        note(f"{self.out}: {self.writer.frames / self.sample_rate:.2f} s at {self.sample_rate} Hz")

    def interrupted(self) -> None:
        self.writer.close()
        note(f"saved the {self.writer.frames / self.sample_rate:.1f} s decoded so far in {self.partial}")

    def discard(self) -> None:
        """An error (not an interruption): nothing is left behind."""
        self.writer.close()
        self.partial.unlink(missing_ok=True)


def decode(args, codec: MimiCodec, out: Path) -> None:
    codes = read_codes(args.input, codec)
    if args.num_codebooks is not None:
        codec.set_num_codebooks(args.num_codebooks)  # checks the value
        codes = codes[:, : args.num_codebooks]
    stream = codec.decode_stream()
    output = _Output(out, codec)
    step = max(1, round(BLOCK_SECONDS * codec.frame_rate))
    try:
        for i in range(0, codes.shape[2], step):
            output.write(stream.feed(codes[:, :, i : i + step]))
    except KeyboardInterrupt:
        output.interrupted()
        raise
    except BaseException:
        output.discard()
        raise
    output.finish()


def roundtrip(args, codec: MimiCodec, out: Path) -> None:
    encoder = codec.encode_stream(num_codebooks=args.num_codebooks)
    decoder = codec.decode_stream()
    blocks = iter_audio_blocks(args.input, codec.sample_rate, BLOCK_SECONDS)  # fails here on a bad input
    output, samples = None, 0
    try:
        for block in blocks:
            samples += len(block)
            output = output or _Output(out, codec)
            output.write(decoder.feed(encoder.feed(block[None])))
        output.limit = samples  # the last frame was zero-padded: keep the input's length
        output.write(decoder.feed(encoder.flush()))
    except KeyboardInterrupt:
        if output is not None:
            output.interrupted()
        raise
    except BaseException:
        if output is not None:
            output.discard()
        raise
    output.finish()


def main(argv: list[str] | None = None) -> int:
    p = configure_parser()
    args = p.parse_args(argv)

    def body():
        out = _check_paths(args)
        if args.action != "decode" and args.input != "-" and not Path(args.input).is_file():
            raise UserError(f"{args.input}: no such file")
        if args.action == "decode" and not Path(args.input).is_file():
            raise UserError(f"{args.input}: no such file")
        if sys.stderr.isatty():
            note(f"loading the codec of {args.model} ...")
        codec = load_codec(args.model)
        if args.num_codebooks is not None:
            codec.set_num_codebooks(args.num_codebooks)
        if args.action != "encode" and not codec.has_decoder:
            raise CodecError(codec.missing)
        with sigterm_raises():
            {"encode": encode, "decode": decode, "roundtrip": roundtrip}[args.action](args, codec, out)

    return run(p.prog, body)

"""Audio: WAV decoding, resampling, log-mel features, SpecAugment, and the fsdd / wav-folder datasets.

One pipeline serves training and inference (`features_from_wav`), so a new recording is prepared
exactly as the training set was:

    samples in [-1, 1] -> resample to data.sample_rate -> fix_length(clip_seconds) -> log-mel (n_mels)

The log-mel spectrogram is the "image" a model sees: x is float32 (N, 1, n_mels, frames), and the
trainer standardizes it per batch with one scalar mean/std measured on the training features.
Features are computed once, batched over zero-padded recordings (all 3000 FSDD clips in about a
second on a CPU), so an epoch costs no decoding.
"""

from __future__ import annotations

import functools
import io
import math
import struct
import warnings
import wave as _wave  # the name `wave` is fix_length's argument
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from layerwise.data.datasets import (DataError, Dataset, DatasetInfo, _npz, register_dataset,
                                     holdout_split, user_path)

_PCM, _FLOAT, _EXTENSIBLE = 1, 3, 0xFFFE  # WAV format tags
MAX_SAMPLE_RATE = 768_000  # Hz: the highest rate audio interfaces record; a header above it is damaged
_POLY_MAX = 10_000  # up/down factors beyond this resample by FFT (a polyphase filter would be huge)
MAX_AMPLITUDE = 1e6  # float samples beyond this (full scale is 1) would overflow the features
_LOG_EPS = 1e-6  # log(power + eps): floor for silent (zero-padded) frames, about -13.8
_CHUNK = 256  # recordings per log_mel call when building a dataset (bounds the STFT's memory)


# ----------------------------------------------------------------------------------------------
# WAV decoding


def _bad(name: str, what: str, fix: str = "Re-export or re-download the recording.") -> DataError:
    return DataError(f"WAV file '{name}' cannot be read: {what}. {fix}")


def _parse_riff(buf: bytes, name: str) -> tuple[tuple[int, int, int, int, int, bool], int, int]:
    """Walk the RIFF chunks: ((format tag, channels, rate, block align, bits, extensible), data offset,
    data size). Raises DataError for a bad header or a data chunk cut short."""
    if len(buf) < 12 or buf[:4] != b"RIFF" or buf[8:12] != b"WAVE":
        raise _bad(name, f"it is not a RIFF/WAVE file (it starts with {buf[:12]!r})",
                   "Give a .wav file (RIFF/WAVE, PCM or float samples).")
    pos, fmt = 12, None
    while pos + 8 <= len(buf):
        cid, size = buf[pos:pos + 4], struct.unpack_from("<I", buf, pos + 4)[0]
        body = pos + 8
        if cid == b"fmt ":
            if size < 16 or body + size > len(buf):
                raise _bad(name, f"its fmt chunk is {size} bytes with {len(buf) - body} present (a WAV "
                                 f"format header needs 16)")
            tag, ch, rate, _, align, bits = struct.unpack_from("<HHIIHH", buf, body)
            ext = tag == _EXTENSIBLE
            if ext and size >= 40:  # WAVE_FORMAT_EXTENSIBLE: the SubFormat GUID starts with the real tag
                tag = struct.unpack_from("<H", buf, body + 24)[0]
            fmt = (tag, ch, rate, align, bits, ext)
        elif cid == b"data":
            if fmt is None:
                raise _bad(name, "its data chunk comes before any fmt chunk, so the sample format is unknown")
            if body + size > len(buf):
                raise _bad(name, f"its data chunk declares {size} bytes but only {len(buf) - body} are present "
                                 f"(the file is truncated)")
            return fmt, body, size
        pos = body + size + (size & 1)  # chunks are padded to an even size
    raise _bad(name, "it has no fmt chunk" if fmt is None else "it has no data chunk (the file is truncated)")


CHANNELS = ("mean", "left", "right")  # the values of data.channel
_CANCEL_DB = -20.0  # a down-mix this far below its channels' level has cancelled the signal


def _decode(raw: bytes, tag: int, bits: int, channels: int) -> np.ndarray:
    """Interleaved little-endian frames -> float32 (S, channels), integers scaled to [-1, 1).
    Float samples are kept as they are (a float WAV may overshoot full scale; clipping would
    change the signal)."""
    if tag == _FLOAT:
        x = np.frombuffer(raw, "<f4" if bits == 32 else "<f8").astype(np.float32)
    elif bits == 8:  # 8-bit WAV is unsigned with 128 as zero
        x = (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    elif bits == 16:
        x = np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    elif bits == 24:  # 3-byte samples: place them in the top of an int32, then shift back (sign-extends)
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3)
        w = np.zeros((len(b), 4), np.uint8)
        w[:, 1:] = b
        x = (w.view("<i4")[:, 0] >> 8).astype(np.float32) / 8388608.0
    else:  # 32-bit integer; scale in float64 so full-scale values do not round past 1
        x = (np.frombuffer(raw, "<i4").astype(np.float64) / 2147483648.0).astype(np.float32)
    return x.reshape(-1, channels)


def downmix(frames: np.ndarray, channel: str = "mean", name: str = "<wav>",
            warn: Callable[[str], None] | None = None) -> np.ndarray:
    """(S, C) samples -> (S,) mono by the rule ``channel`` (data.channel): ``mean`` averages the
    channels, ``left`` takes the first, ``right`` the second (a mono file is its one channel
    under every rule). When the average cancels the signal (it is more than 20 dB below the
    channels' own level: the channels are out of phase, e.g. one is the other negated), ``warn``
    is called with a message naming the file (default: warnings.warn), since the model would hear
    near-silence."""
    if channel not in CHANNELS:
        raise DataError(f"data.channel={channel!r}; use one of {', '.join(CHANNELS)}.")
    C = frames.shape[1]
    if C == 1:
        return frames[:, 0]
    if channel != "mean":
        return frames[:, 0 if channel == "left" else 1]
    mono = frames.mean(axis=1, dtype=np.float32)
    level = float(np.sqrt(np.mean(np.square(frames, dtype=np.float64))))
    mixed = float(np.sqrt(np.mean(np.square(mono, dtype=np.float64))))
    if level > 1e-4 and mixed < level * 10 ** (_CANCEL_DB / 20):
        db = 20 * math.log10(max(mixed, 1e-12) / level)
        message = (f"WAV file '{name}': averaging its {C} channels cancels the signal (the mean is {db:.0f} dB "
                   f"below the channels; they are out of phase), so the model hears near-silence. Set "
                   f"data.channel=left or data.channel=right to use one channel.")
        (warn or (lambda m: warnings.warn(m, stacklevel=3)))(message)
    return mono


def read_wav(src: str | Path | bytes, name_for_errors: str | None = None, channel: str = "mean",
             warn: Callable[[str], None] | None = None) -> tuple[np.ndarray, int]:
    """Decode a WAV file (a path or its bytes) -> (samples float32 (S,), sample rate in Hz).

    Supports PCM 8-bit (unsigned), 16-, 24- and 32-bit integer (scaled to [-1, 1)) and 32/64-bit
    IEEE float (kept as they are, overshoot included), plain or WAVE_FORMAT_EXTENSIBLE headers,
    any number of channels, made mono by :func:`downmix` (``channel``: mean, left or right;
    ``warn`` receives the warning when the mean cancels the signal). Plain PCM goes
    through the stdlib ``wave`` module; float and extensible files (which Python 3.11's ``wave``
    rejects) are read from the chunks checked here. A bad header, truncated data, an unsupported
    format, a file with no samples or with NaN or infinite samples raises DataError naming the
    file (``name_for_errors``, default the path) and what is wrong.
    """
    is_bytes = isinstance(src, (bytes, bytearray, memoryview))
    name = name_for_errors or ("<wav bytes>" if is_bytes else str(src))
    if is_bytes:
        buf = bytes(src)
    else:
        try:
            buf = Path(src).read_bytes()
        except OSError as e:
            raise DataError(f"WAV file '{name}' cannot be opened ({e.strerror or e}). Check the path and "
                            f"that the file is readable.") from None
    (tag, ch, rate, align, bits, ext), off, size = _parse_riff(buf, name)
    ok = (tag == _PCM and bits in (8, 16, 24, 32)) or (tag == _FLOAT and bits in (32, 64))
    if not ok:
        raise _bad(name, f"it holds {bits}-bit samples with WAV format tag {tag}; supported are PCM 8/16/24/"
                         f"32-bit integer and 32/64-bit float", "Convert it to 16-bit PCM WAV.")
    if rate > MAX_SAMPLE_RATE:
        raise _bad(name, f"its header says {rate:,} samples per second, more than any recorder makes "
                         f"({MAX_SAMPLE_RATE:,} Hz at most); the header is damaged")
    if ch < 1 or rate < 1 or align != ch * bits // 8:
        raise _bad(name, f"its header is inconsistent ({ch} channels, {rate} Hz, {bits}-bit samples, "
                         f"{align} bytes per frame)")
    if size == 0:
        raise _bad(name, "it holds no audio samples")
    if size % align:
        raise _bad(name, f"its data chunk ({size} bytes) is not a whole number of {align}-byte frames "
                         f"(the file is truncated)")
    raw = buf[off:off + size]
    if tag == _PCM and not ext:  # the stdlib reader, as a second opinion on the header and the frames
        try:
            with _wave.open(io.BytesIO(buf)) as w:
                raw = w.readframes(w.getnframes())
        except (_wave.Error, EOFError, struct.error) as e:
            raise _bad(name, f"the wave module rejects it ({e})") from None
        if len(raw) != size:
            raise _bad(name, f"{len(raw)} of its {size} data bytes could be read (the file is truncated)")
    frames = _decode(raw, tag, bits, ch)
    if tag == _FLOAT and not np.isfinite(frames).all():
        bad = int((~np.isfinite(frames)).any(axis=1).sum())
        raise _bad(name, f"{bad} of its {len(frames)} frames hold NaN or infinite samples",
                   "Repair or re-export the recording, or remove it.")
    if tag == _FLOAT and len(frames) and float(np.abs(frames).max()) > MAX_AMPLITUDE:
        raise _bad(name, f"its float samples reach {float(np.abs(frames).max()):.3g}, where full scale is 1; its "
                         f"spectrogram would overflow", "Re-export it with samples in [-1, 1], or remove it.")
    return downmix(frames, channel, name, warn), rate


# ----------------------------------------------------------------------------------------------
# Signal processing


def resample(x: np.ndarray, orig_sr: int, new_sr: int) -> np.ndarray:
    """Band-limited resampling along the last axis (polyphase FIR, scipy.signal.resample_poly) by
    the gcd-reduced ratio new_sr/orig_sr, or by FFT (scipy.signal.resample) when that ratio's
    factors exceed _POLY_MAX (odd rates such as 44101 Hz, whose filter would be huge); returns
    ``x`` itself when the rates are equal.
    (..., S) -> (..., ceil(S * new_sr / orig_sr))."""
    if orig_sr <= 0 or new_sr <= 0:
        raise DataError(f"cannot resample from {orig_sr} Hz to {new_sr} Hz: both rates must be positive. "
                        f"Fix data.sample_rate or the recording's header.")
    if orig_sr == new_sr:
        return x
    from scipy.signal import resample_poly

    g = math.gcd(orig_sr, new_sr)
    up, down = new_sr // g, orig_sr // g
    if max(up, down) > _POLY_MAX:  # e.g. 44101 Hz -> 8000 Hz: band-limited FFT resampling instead
        from scipy.signal import resample as fft_resample

        n = -(-x.shape[-1] * new_sr // orig_sr)
        return fft_resample(x.astype(np.float64), n, axis=-1).astype(np.float32)
    h = _lowpass(up, down).astype(x.dtype if x.dtype.kind == "f" else np.float64)
    return resample_poly(x, up, down, axis=-1, window=h).astype(np.float32, copy=False)


@functools.lru_cache(maxsize=16)
def _lowpass(up: int, down: int) -> np.ndarray:
    """resample_poly's own default FIR (Kaiser beta 5, 10 zero crossings per side), designed once per
    ratio: designing it per call tripled the time to resample the 3000 FSDD recordings."""
    from scipy.signal import firwin

    m = max(up, down)
    h = firwin(20 * m + 1, 1.0 / m, window=("kaiser", 5.0))
    h.flags.writeable = False  # shared by every call
    return h


def fix_length(wave: np.ndarray | torch.Tensor, n: int) -> np.ndarray | torch.Tensor:
    """Pad with zeros at the end, or crop, to exactly n samples along the last axis. Cropping keeps
    the first n samples: spoken-digit style recordings start at the onset, so the start holds the word."""
    s = wave.shape[-1]
    if s >= n:
        return wave[..., :n]
    if isinstance(wave, torch.Tensor):
        return torch.nn.functional.pad(wave, (0, n - s))
    out = np.zeros(wave.shape[:-1] + (n,), wave.dtype)
    out[..., :s] = wave
    return out


def default_n_fft(sample_rate: int) -> int:
    """A 25 ms analysis window rounded up to a power of two (256 at 8 kHz, 512 at 16 kHz)."""
    return 1 << max(0, math.ceil(math.log2(0.025 * sample_rate)))


def default_hop(sample_rate: int) -> int:
    """A 10 ms hop in samples (80 at 8 kHz)."""
    return max(1, round(0.010 * sample_rate))


def _hz_to_mel(f: torch.Tensor) -> torch.Tensor:  # HTK mel scale
    return 2595.0 * torch.log10(1.0 + f / 700.0)


def _mel_to_hz(m: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float = 0.0, f_max: float | None = None,
                   area_norm: bool = False) -> torch.Tensor:
    """Triangular filters on the HTK mel scale -> (n_mels, n_fft // 2 + 1) float32, non-negative.

    Filter m rises linearly from centre m-1 to centre m and falls to centre m+1, where the n_mels + 2
    centres are equally spaced in mel from f_min to f_max (default sample_rate / 2). By default each
    filter peaks at 1 (HTK, torchaudio's norm=None): the log and the per-channel standardization that
    follow make absolute band gains immaterial. ``area_norm=True`` scales filter m by
    2 / (f[m+1] - f[m-1]) (Slaney's equal-area normalization, librosa's default). A filter that no
    FFT bin falls inside (too many bands for n_fft) raises DataError instead of giving a dead feature.
    """
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2 or n_mels < 1 or n_fft < 2:
        raise DataError(f"mel filterbank needs n_mels >= 1, n_fft >= 2 and 0 <= f_min < f_max <= sample_rate/2; "
                        f"got n_mels={n_mels}, n_fft={n_fft}, f_min={f_min}, f_max={f_max}, "
                        f"sample_rate={sample_rate}. Fix the audio settings.")
    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)  # (F,) bin centres, Hz
    m_lo, m_hi = (float(_hz_to_mel(torch.tensor(float(f), dtype=torch.float64))) for f in (f_min, f_max))
    # (n_mels + 2,) filter edges and centres, Hz
    f = _mel_to_hz(torch.linspace(m_lo, m_hi, n_mels + 2, dtype=torch.float64))
    lo, mid, hi = f[:-2, None], f[1:-1, None], f[2:, None]  # (n_mels, 1) each
    up, down = (freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)  # (n_mels, F)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    empty = (fb.sum(1) == 0).nonzero().flatten().tolist()
    if empty:
        raise DataError(f"{n_mels} mel bands are too many for n_fft={n_fft} at {sample_rate} Hz: band(s) "
                        f"{empty[:5]} cover no FFT bin and would be constant. Use fewer bands (data.n_mels) "
                        f"or a higher data.sample_rate.")
    if area_norm:
        fb = fb * (2.0 / (hi - lo))
    return fb.float()


def log_mel(waves: torch.Tensor, sample_rate: int, n_mels: int, n_fft: int | None = None,
            hop: int | None = None) -> torch.Tensor:
    """Log-mel spectrogram of a batch: waves (B, S) float -> (B, n_mels, 1 + S // hop).

    torch.stft with a periodic Hann window of n_fft samples (default: 25 ms rounded up to a power of
    two), hop default 10 ms, centred frames (reflect padding of n_fft // 2 at both ends), power
    spectrum |X|^2, HTK mel projection, then log(mel + 1e-6). Runs on the waves' device.
    """
    n_fft = n_fft or default_n_fft(sample_rate)
    hop = hop or default_hop(sample_rate)
    if waves.dim() != 2 or waves.shape[-1] <= n_fft // 2:
        raise DataError(f"log_mel needs waves shaped (batch, samples) with more than n_fft/2={n_fft // 2} "
                        f"samples; got shape {tuple(waves.shape)}. Use a longer data.clip_seconds.")
    window = torch.hann_window(n_fft, device=waves.device, dtype=waves.dtype)
    spec = torch.stft(waves, n_fft, hop, window=window, center=True, pad_mode="reflect",
                      return_complex=True)  # (B, F, T)
    power = spec.real.square().addcmul_(spec.imag, spec.imag)  # (B, F, T) |X|^2, one temporary
    fb = mel_filterbank(n_fft, n_mels, sample_rate).to(waves.device, waves.dtype)  # (n_mels, F)
    return torch.matmul(fb, power).add_(_LOG_EPS).log_()  # (B, n_mels, T)


# ----------------------------------------------------------------------------------------------
# SpecAugment


def _band_masks(B: int, size: int, width: int, n_masks: int, gen: torch.Generator,
                device: torch.device) -> torch.Tensor:
    """(B, size) bool: the union of n_masks bands per example, width w ~ U{0..width}, start ~ U{0..size-w}."""
    width = min(width, size)
    w = torch.randint(0, width + 1, (n_masks, B), generator=gen)  # (K, B)
    u = torch.rand(n_masks, B, generator=gen)  # (K, B)
    start = torch.minimum((u * (size - w + 1)).long(), size - w)  # (K, B) guards u*(n) rounding up to n
    w, start = w.to(device, non_blocking=True), start.to(device, non_blocking=True)
    pos = torch.arange(size, device=device)  # (size,)
    inside = (pos >= start[..., None]) & (pos < (start + w)[..., None])  # (K, B, size)
    return inside.any(0)


def spec_augment(x: torch.Tensor, time_width: int, freq_width: int, n_masks: int,
                 gen: torch.Generator) -> torch.Tensor:
    """SpecAugment frequency and time masking (Park et al. 2019, without time warping).

    x: (B, C, F, T) or (B, F, T), already normalized, so masked values are set to 0 (the mean). For
    each example, n_masks frequency bands of width ~ U{0..freq_width} and n_masks time bands of width
    ~ U{0..time_width}, each starting uniformly where it fits, are zeroed across all channels.
    Random numbers come from the CPU generator ``gen`` (frequency draws, then time draws), so the
    result does not depend on x's device. A width of 0 turns that kind off; returns x itself when
    nothing is masked, else a new tensor (x is not modified).
    """
    if x.dim() not in (3, 4):
        raise ValueError(f"spec_augment takes (B, C, F, T) or (B, F, T); got shape {tuple(x.shape)}")
    if n_masks <= 0 or (time_width <= 0 and freq_width <= 0):
        return x
    B, F, T = x.shape[0], x.shape[-2], x.shape[-1]
    mask = torch.zeros(B, F, T, dtype=torch.bool, device=x.device)
    if freq_width > 0:
        mask |= _band_masks(B, F, freq_width, n_masks, gen, x.device)[:, :, None]
    if time_width > 0:
        mask |= _band_masks(B, T, time_width, n_masks, gen, x.device)[:, None, :]
    return x.masked_fill(mask[:, None] if x.dim() == 4 else mask, 0.0)


# ----------------------------------------------------------------------------------------------
# Datasets


def _settings(opts: Any) -> dict:
    """The audio settings a dataset records in info.extra["audio"] (validated)."""
    sr, secs, n_mels = int(opts.sample_rate), float(opts.clip_seconds), int(opts.n_mels)
    if sr <= 0 or not secs > 0 or n_mels <= 0:
        raise DataError(f"audio settings must be positive: data.sample_rate={sr}, data.clip_seconds={secs}, "
                        f"data.n_mels={n_mels}. Fix them in the config or with --data.<key>=VALUE.")
    channel = str(getattr(opts, "channel", "mean"))
    if channel not in CHANNELS:
        raise DataError(f"data.channel={channel!r}; use one of {', '.join(CHANNELS)} (how a stereo recording "
                        f"becomes mono).")
    a = {"sample_rate": sr, "clip_seconds": secs, "n_mels": n_mels,
         "n_fft": default_n_fft(sr), "hop": default_hop(sr), "channel": channel}
    if round(secs * sr) < a["n_fft"]:
        raise DataError(f"data.clip_seconds={secs} gives {round(secs * sr)} samples at {sr} Hz, fewer than one "
                        f"{a['n_fft']}-sample analysis window. Use a longer clip.")
    mel_filterbank(a["n_fft"], n_mels, sr)  # raises early for too many bands
    return a


def _prepare(samples: np.ndarray, sr: int, a: dict) -> np.ndarray:
    """One recording at its own rate -> (clip samples,) at the dataset's rate."""
    return fix_length(resample(samples, sr, a["sample_rate"]), round(a["clip_seconds"] * a["sample_rate"]))


def _crop_notice(seconds: list[float], names: list[str], a: dict) -> str | None:
    """The warning for recordings longer than the clip, which lose their ends (None if none do)."""
    clip = a["clip_seconds"]
    long = [i for i, t in enumerate(seconds) if t > clip + 1e-9]
    if not long:
        return None
    worst = max(long, key=lambda i: seconds[i])
    return (f"{len(long)} of {len(seconds)} recordings are longer than data.clip_seconds={clip:g} and keep only "
            f"their first {clip:g} s (the longest, '{names[worst]}', is {seconds[worst]:.2f} s). Raise "
            f"data.clip_seconds if their ends matter.")


def _features(waves: np.ndarray, a: dict) -> torch.Tensor:
    """(N, S) prepared recordings -> (N, 1, n_mels, frames) float32, in chunks to bound memory."""
    frames = 1 + waves.shape[1] // a["hop"]
    out = torch.empty(len(waves), 1, a["n_mels"], frames)
    for i in range(0, len(waves), _CHUNK):
        out[i:i + _CHUNK, 0] = log_mel(torch.from_numpy(waves[i:i + _CHUNK]), a["sample_rate"], a["n_mels"],
                                       a["n_fft"], a["hop"])
    return out


def _make(name: str, a: dict, w_tr: np.ndarray, y_tr: np.ndarray, w_te: np.ndarray, y_te: np.ndarray,
          classes: list[str], source: dict, warnings: list[str]) -> Dataset:
    x_tr, x_te = _features(w_tr, a), _features(w_te, a)
    std, mean = torch.std_mean(x_tr.double())  # one scalar for the single channel
    if not torch.isfinite(std) or not std > 1e-6:
        what = "not finite" if not torch.isfinite(std) else "all the same (are all recordings silent?)"
        raise DataError(f"dataset '{name}': the training features are {what}, so they cannot be standardized. "
                        f"Check the recordings.")
    info = DatasetInfo(name, tuple(x_tr.shape[1:]), len(classes), classes, 1.0, [float(mean)], [float(std)],
                       task="classify", extra={"audio": dict(a)})
    return Dataset(info, x_tr, torch.from_numpy(y_tr).long(), x_te, torch.from_numpy(y_te).long(),
                   source, warnings=warnings)


@register_dataset("fsdd")
def _fsdd(root: Path, opts: Any) -> Dataset:
    """Free Spoken Digit Dataset from fsdd/fsdd.npz; official split: index 0-4 test, 5-49 train."""
    rel = "fsdd/fsdd.npz"
    d = _npz(root, rel, "fsdd")
    missing = sorted({"audio", "offsets", "label", "index", "sample_rate"} - set(d))
    if missing:
        raise DataError(f"dataset file '{root / rel}' lacks the arrays {missing}. Replace it with a good copy.")
    audio, off, label, index = d["audio"], d["offsets"].astype(np.int64), d["label"], d["index"]
    n = len(off) - 1
    if (audio.dtype != np.int16 or n < 1 or off[0] != 0 or off[-1] != len(audio) or (np.diff(off) <= 0).any()
            or len(label) != n or len(index) != n or label.max() > 9):
        raise DataError(f"dataset file '{root / rel}' is inconsistent (int16 audio with {len(audio)} samples, "
                        f"{len(off)} offsets, {len(label)} labels). Replace it with a good copy.")
    a = _settings(opts)
    sr, x = int(d["sample_rate"]), audio.astype(np.float32) / 32768.0
    waves = np.stack([_prepare(x[off[i]:off[i + 1]], sr, a) for i in range(n)])  # (N, clip samples)
    test = index <= 4
    y = label.astype(np.int64)
    seconds = (np.diff(off) / sr).tolist()
    notice = _crop_notice(seconds, [f"{rel}[{i}] (digit {label[i]}, index {index[i]})" for i in range(n)], a)
    source = {"files": [rel], "split": "official: recording index 0-4 test, 5-49 train",
              "recordings": n, "source_sample_rate": sr,
              "cropped": sum(t > a["clip_seconds"] for t in seconds)}
    return _make("fsdd", a, waves[~test], y[~test], waves[test], y[test], [str(i) for i in range(10)], source,
                 [notice] if notice else [])


def _subdirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def _wavs(d: Path) -> list[Path]:
    """The .wav files directly in a class folder; none is an error."""
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() == ".wav"
                   and not p.name.startswith("."))
    if not files:
        raise DataError(f"class folder '{d}' holds no .wav files. Add recordings or remove the folder.")
    return files


def _split_files(folder: Path, opts: Any) -> tuple[list[str], list, list, str]:
    """(classes, train [(file, label)], test [(file, label)]) from either layout."""
    has_tr, has_te = (folder / "train").is_dir(), (folder / "test").is_dir()
    if has_tr != has_te:
        raise DataError(f"wav folder '{folder}' has a {'train' if has_tr else 'test'}/ folder but no "
                        f"{'test' if has_tr else 'train'}/ folder. Give both train/<class>/*.wav and "
                        f"test/<class>/*.wav, or only <class>/*.wav folders (then a split is drawn).")
    if has_tr:
        classes = [p.name for p in _subdirs(folder / "train")]
        unknown = sorted({p.name for p in _subdirs(folder / "test")} - set(classes))
        if unknown:
            raise DataError(f"wav folder '{folder}': test/ has class folders {unknown} that train/ lacks. "
                            f"Add training recordings for them or remove them.")
        if not classes:
            raise DataError(f"wav folder '{folder / 'train'}' holds no class folders. Lay it out as "
                            f"train/<class>/*.wav.")
        train = [(f, c) for c, name in enumerate(classes) for f in _wavs(folder / "train" / name)]
        test = [(f, c) for c, name in enumerate(classes) if (folder / "test" / name).is_dir()
                for f in _wavs(folder / "test" / name)]
        return classes, train, test, "train/ and test/ folders"
    dirs = _subdirs(folder)
    if not dirs:
        raise DataError(f"wav folder '{folder}' holds no class folders. Put each class's recordings in "
                        f"<class>/*.wav (or train/<class>/ and test/<class>/).")
    # The shared stratified split (fixed seed, val_fraction of every class held out as the test
    # split), drawn from the file listing alone: which files turn out unreadable does not move it.
    items = [(f, c) for c, d in enumerate(dirs) for f in _wavs(d)]
    tr, te, how = holdout_split(np.array([c for _, c in items]), opts)
    return [d.name for d in dirs], [items[i] for i in tr], [items[i] for i in te], how


def _read_all(items: list, a: dict, skip: bool, warnings: list[str], seconds: dict[str, float]
              ) -> tuple[np.ndarray, np.ndarray]:
    """Decode, resample and fix the length of ``items`` [(file, label)]; each file's duration
    (seconds, before cropping) goes into ``seconds``; down-mix warnings into ``warnings``."""
    waves, ys = [], []
    for f, c in items:
        try:
            s, sr = read_wav(f, channel=a.get("channel", "mean"), warn=warnings.append)
        except DataError as e:
            if not skip:
                raise DataError(f"{e} Or set data.on_error=skip to drop unreadable files with a "
                                f"warning.") from None
            warnings.append(f"skipped {e}")
            continue
        seconds[str(f)] = len(s) / sr
        waves.append(_prepare(s, sr, a))
        ys.append(c)
    n = round(a["clip_seconds"] * a["sample_rate"])
    return (np.stack(waves) if waves else np.zeros((0, n), np.float32)), np.asarray(ys, np.int64)


@register_dataset("wav-folder")
def _wav_folder(root: Path, opts: Any) -> Dataset:
    """Class-per-folder WAV recordings: data.path/{train,test}/<class>/*.wav or data.path/<class>/*.wav."""
    folder = user_path(root, opts, "wav-folder", "a folder of <class>/*.wav (or train/<class>/*.wav and "
                                                 "test/<class>/*.wav)")
    if not folder.is_dir():
        raise DataError(f"wav folder '{folder}' is a file. Set data.path to the folder holding the class folders.")
    if opts.on_error not in ("refuse", "skip"):
        raise DataError(f"data.on_error must be 'refuse' or 'skip', not '{opts.on_error}'.")
    a = _settings(opts)
    classes, train, test, how = _split_files(folder, opts)
    warnings: list[str] = []
    seconds: dict[str, float] = {}
    w_tr, y_tr = _read_all(train, a, opts.on_error == "skip", warnings, seconds)
    w_te, y_te = _read_all(test, a, opts.on_error == "skip", warnings, seconds)
    notice = _crop_notice(list(seconds.values()), list(seconds), a)
    if notice:
        warnings.append(notice)
    empty = [classes[c] for c in range(len(classes)) if not (y_tr == c).any()]
    if empty or len(w_te) == 0:
        raise DataError(f"wav folder '{folder}' has no readable "
                        f"{f'training recordings for classes {empty}' if empty else 'test recordings'} "
                        f"({len(warnings)} files skipped). Add readable .wav files.")
    source = {"path": str(folder), "files": len(train) + len(test),
              "skipped": sum(w.startswith("skipped") for w in warnings),
              "cropped": sum(t > a["clip_seconds"] for t in seconds.values()),
              "split": how}
    return _make("wav-folder", a, w_tr, y_tr, w_te, y_te, classes, source, warnings)


def features_from_wav(path: str | Path, audio_extra: dict) -> torch.Tensor:
    """A new recording -> raw features (1, n_mels, frames), prepared exactly as training did.

    ``audio_extra`` is the dataset's ``info.extra["audio"]`` (the whole ``info.extra`` is accepted
    too). The result is not standardized: stack it into a batch and apply the loader's Normalize.
    """
    a = audio_extra.get("audio", audio_extra)
    need = ("sample_rate", "clip_seconds", "n_mels", "n_fft", "hop")
    if any(k not in a for k in need):
        raise DataError(f"audio settings {sorted(a)} lack some of {list(need)}; pass the dataset's "
                        f"info.extra['audio'] (saved with the run).")
    s, sr = read_wav(path, channel=a.get("channel", "mean"))  # models saved before data.channel: mean
    if len(s) / sr > a["clip_seconds"] + 1e-9:
        warnings.warn(f"recording '{path}' is {len(s) / sr:.2f} s long; the model hears its first "
                      f"{a['clip_seconds']:g} s (the clip length it was trained on)", stacklevel=2)
    return _features(_prepare(s, sr, a)[None], a)[0]

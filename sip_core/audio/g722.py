"""G.722 at 64 kbit/s: 16 kHz audio as two ADPCM sub-bands (ITU-T G.722, mode 1).

Why our own: no maintained pure-Python implementation exists and ``audioop`` never had one; the
algorithm is fixed-point and fully specified, so it is written here from the recommendation's
block descriptions:

- a 24-tap quadrature mirror filter (QMF) splits each pair of 16 kHz input samples into one
  lower and one higher sub-band sample at 8 kHz (and the receive QMF joins them again);
- the lower band is coded with 6 bits by adaptive differential PCM (quantiser with 30 levels, a
  log-domain scale factor, and a pole-zero predictor with 2 poles and 6 zeros fed from the 4 most
  significant bits only, so that 56 and 48 kbit/s decoders stay in step);
- the higher band is coded with 2 bits by the same kind of ADPCM;
- a code byte is ``high << 6 | low``; one byte per pair of input samples, so 20 ms of audio
  (320 samples) is 160 bytes, and the RTP clock runs at 8000 Hz (RFC 3551's historical quirk).

Every operation saturates or shifts as the recommendation's fixed-point arithmetic does (16-bit
limits, arithmetic right shifts), so the bit stream is the standard one and any G.722 phone decodes
it. Encoder and decoder each keep state: use one object per RTP stream, in stream order.
"""

from __future__ import annotations

import functools
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from typing import Final

__all__ = ["G722Decoder", "G722Encoder"]

# --- tables (G.722 §3 and §4) ------------------------------------------------------------

#: QMF coefficients h(0), h(2), ..., h(22) (scaled by 2**13); the filter is symmetric,
#: h(k) = h(23 - k), so the odd taps h(2i + 1) are QMF_EVEN[11 - i].
QMF_EVEN: Final = (3, -11, 12, 32, -210, 951, 3876, -805, 362, -156, 53, -11)

#: Lower-band quantiser decision levels (scaled by 2**12 against the scale factor), by interval.
Q6: Final = (
    0, 35, 72, 110, 150, 190, 233, 276, 323, 370, 422, 473, 530, 587, 650,
    714, 786, 858, 940, 1023, 1121, 1219, 1339, 1458, 1612, 1765, 1980, 2195, 2557, 2919,
)  # fmt: skip
#: The 6-bit code of quantiser interval i for a negative / a non-negative difference.
ILN: Final = (0, 63, 62, *range(31, 3, -1), 0)
ILP: Final = (0, *range(61, 31, -1), 0)
#: 6-bit inverse quantiser output (scaled by 2**15), by code; codes 0-3 are never sent.
QM6: Final = (
    -136, -136, -136, -136, -24808, -21904, -19008, -16704, -14984, -13512, -12280, -11192,
    -10232, -9360, -8576, -7856, -7192, -6576, -6000, -5456, -4944, -4464, -4008, -3576, -3168,
    -2776, -2400, -2032, -1688, -1360, -1040, -728, 24808, 21904, 19008, 16704, 14984, 13512,
    12280, 11192, 10232, 9360, 8576, 7856, 7192, 6576, 6000, 5456, 4944, 4464, 4008, 3576, 3168,
    2776, 2400, 2032, 1688, 1360, 1040, 728, 432, 136, -432, -136,
)  # fmt: skip
#: 4-bit inverse quantiser (the code's 4 most significant bits), which feeds the predictor.
QM4: Final = (
    0, -20456, -12896, -8968, -6288, -4240, -2584, -1200,
    20456, 12896, 8968, 6288, 4240, 2584, 1200, 0,
)  # fmt: skip
#: Lower band: the 4-bit code's magnitude class, and the log scale factor step for each class.
RL42: Final = (0, 7, 6, 5, 4, 3, 2, 1, 7, 6, 5, 4, 3, 2, 1, 0)
WL: Final = (-60, -30, 58, 172, 334, 538, 1198, 3042)
#: Higher band: 2-bit codes, inverse quantiser, magnitude class and scale factor step.
IHN: Final = (0, 1, 0)
IHP: Final = (0, 3, 2)
QM2: Final = (-7408, -1616, 7408, 1616)
RH2: Final = (2, 1, 2, 1)
WH: Final = (0, -214, 798)
#: Antilog table for the scale factor: 2048 * 2**(i / 32), rounded as the recommendation has it.
ILB: Final = (
    2048, 2093, 2139, 2186, 2233, 2282, 2332, 2383, 2435, 2489, 2543, 2599, 2656, 2714, 2774,
    2834, 2896, 2960, 3025, 3091, 3158, 3228, 3298, 3371, 3444, 3520, 3597, 3676, 3756, 3838,
    3922, 4008,
)  # fmt: skip

_LOW_NB_MAX: Final = 18432
_HIGH_NB_MAX: Final = 22528
_HIGH_THRESHOLD: Final = 564


class _Band:
    """One sub-band's ADPCM state: the pole-zero predictor and the log scale factor.

    Names follow the recommendation: ``s`` the signal estimate, ``sz`` its zero-section part,
    ``r`` reconstructed signals, ``p`` partial reconstructions, ``a``/``b`` pole/zero
    coefficients, ``d`` quantised differences (1 is the newest stored), ``nb`` the log scale
    factor and ``det`` the linear one. The coders copy it into local variables for a whole call
    (:meth:`state`) and back at the end (:meth:`set_state`): their loops run once per pair of
    samples in pure Python, and locals are what Python reads fastest.
    """

    __slots__ = (
        "a1", "a2", "b1", "b2", "b3", "b4", "b5", "b6", "d1", "d2", "d3", "d4", "d5", "d6",
        "det", "nb", "p1", "p2", "r1", "r2", "s", "sz",
    )  # fmt: skip

    def __init__(self, det: int) -> None:
        self.s = self.sz = 0
        self.r1 = self.r2 = self.p1 = self.p2 = self.a1 = self.a2 = 0
        self.b1 = self.b2 = self.b3 = self.b4 = self.b5 = self.b6 = 0
        self.d1 = self.d2 = self.d3 = self.d4 = self.d5 = self.d6 = 0
        self.nb = 0
        self.det = det

    def state(self) -> tuple[int, ...]:
        """Every state variable, in ``__slots__`` order (for a loop that keeps them in locals)."""
        return (
            self.s, self.sz, self.r1, self.r2, self.p1, self.p2, self.a1, self.a2,
            self.b1, self.b2, self.b3, self.b4, self.b5, self.b6,
            self.d1, self.d2, self.d3, self.d4, self.d5, self.d6, self.nb, self.det,
        )  # fmt: skip

    def set_state(self, values: tuple[int, ...]) -> None:
        """Store what :meth:`state` gave, after the loop has moved it on."""
        (
            self.s, self.sz, self.r1, self.r2, self.p1, self.p2, self.a1, self.a2,
            self.b1, self.b2, self.b3, self.b4, self.b5, self.b6,
            self.d1, self.d2, self.d3, self.d4, self.d5, self.d6, self.nb, self.det,
        ) = values  # fmt: skip


#: The log scale factor's step for each 4-bit (lower) and 2-bit (higher) code.
_LOW_STEP: Final = tuple(WL[RL42[code]] for code in range(16))
_HIGH_STEP: Final = tuple(WH[RH2[code]] for code in range(4))


@functools.cache
def _low_thresholds(det: int) -> tuple[int, ...]:
    """QUANTL's decision thresholds for one scale factor (det takes a few hundred values)."""
    return tuple((level * det) >> 12 for level in Q6[1:])


class G722Encoder:
    """16 kHz 16-bit samples in, G.722 code bytes out (one byte per two samples).

    An odd sample at the end of a call is kept for the next call, so frames of any length can be
    fed; RTP frames of 20 ms (320 samples) always give 160 bytes.
    """

    __slots__ = ("_high", "_history", "_low", "_pending")

    def __init__(self) -> None:
        self._low = _Band(32)
        self._high = _Band(8)
        self._history = [0] * 24  # input samples, oldest first
        self._pending: int | None = None

    def encode(self, samples: Sequence[int]) -> bytes:
        """Code bytes for ``samples`` (16-bit values), continuing the stream.

        The loop keeps both bands' state in local variables (suffixed ``L`` and ``H``) and spells
        block 4 out once per band: in pure Python that halves the cost of a frame. Test vectors
        from an independent implementation hold it to the standard bit stream.
        """
        values = list(samples)
        if self._pending is not None:
            values.insert(0, self._pending)
            self._pending = None
        if len(values) % 2:
            self._pending = values.pop()
        out = bytearray(len(values) // 2)
        history = self._history
        low, high = self._low, self._high
        # fmt: off
        (sL, szL, r1L, r2L, p1L, p2L, a1L, a2L, b1L, b2L, b3L, b4L, b5L, b6L,
         d1L, d2L, d3L, d4L, d5L, d6L, nbL, detL) = low.state()
        (sH, szH, r1H, r2H, p1H, p2H, a1H, a2H, b1H, b2H, b3H, b4H, b5H, b6H,
         d1H, d2H, d3H, d4H, d5H, d6H, nbH, detH) = high.state()
        # fmt: on
        h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11 = QMF_EVEN
        ilb = ILB
        qm4 = QM4
        qm2 = QM2
        low_step = _LOW_STEP
        high_step = _HIGH_STEP
        thresholds = _low_thresholds
        for index in range(len(out)):
            del history[:2]
            history.append(values[2 * index])
            history.append(values[2 * index + 1])
            x = history
            # Transmit QMF: x[23] is the newest sample. Even taps on x[23 - 2i], odd ones on
            # x[22 - 2i]; written with the symmetry as the two sums below.
            x_b = (
                h0 * x[0] + h1 * x[2] + h2 * x[4] + h3 * x[6] + h4 * x[8] + h5 * x[10]
                + h6 * x[12] + h7 * x[14] + h8 * x[16] + h9 * x[18] + h10 * x[20] + h11 * x[22]
            )  # fmt: skip
            x_a = (
                h11 * x[1] + h10 * x[3] + h9 * x[5] + h8 * x[7] + h7 * x[9] + h6 * x[11]
                + h5 * x[13] + h4 * x[15] + h3 * x[17] + h2 * x[19] + h1 * x[21] + h0 * x[23]
            )  # fmt: skip

            # Lower band: SUBTRA, QUANTL, INVQAL, LOGSCL/SCALEL, then the predictor.
            el = ((x_a + x_b) >> 14) - sL
            el = 32767 if el > 32767 else -32768 if el < -32768 else el
            magnitude = el if el >= 0 else -(el + 1)
            # The first interval whose upper decision level lies above the magnitude (30 if none).
            interval = bisect_right(thresholds(detL), magnitude) + 1
            code_low = ILN[interval] if el < 0 else ILP[interval]
            code4 = code_low >> 2
            dqL = (detL * qm4[code4]) >> 15
            # LOGSCL, SCALEL: the scale factor for the next sample
            nbL = ((nbL * 127) >> 7) + low_step[code4]
            nbL = 0 if nbL < 0 else _LOW_NB_MAX if nbL > _LOW_NB_MAX else nbL
            shift = 8 - (nbL >> 11)
            base = ilb[(nbL >> 6) & 31]
            detL = (base << -shift if shift < 0 else base >> shift) << 2
            # Block 4 of the lower band: RECONS, PARREC, UPPOL2, UPPOL1, UPZERO, DELAYA, FILTEP,
            # FILTEZ, PREDIC. Differences stay within about 10 230, so d + d needs no saturation.
            r0 = sL + dqL
            r0 = 32767 if r0 > 32767 else -32768 if r0 < -32768 else r0
            p0 = szL + dqL
            p0 = 32767 if p0 > 32767 else -32768 if p0 < -32768 else p0
            sg0 = p0 >> 15
            same1 = sg0 == p1L >> 15
            # UPPOL2: the second pole coefficient
            wd1 = a1L << 2
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = -wd1 if same1 else wd1
            wd2 = 32767 if wd2 > 32767 else wd2
            ap2 = (wd2 >> 7) + (128 if sg0 == p2L >> 15 else -128) + ((a2L * 32512) >> 15)
            ap2 = 12288 if ap2 > 12288 else -12288 if ap2 < -12288 else ap2
            # UPPOL1: the first, kept inside the stability triangle
            ap1 = (192 if same1 else -192) + ((a1L * 32640) >> 15)
            limit = 15360 - ap2
            ap1 = limit if ap1 > limit else -limit if ap1 < -limit else ap1
            # UPZERO: each zero tap leaks, then steps by the sign agreement of d with it
            b1L = (b1L * 32640) >> 15
            b2L = (b2L * 32640) >> 15
            b3L = (b3L * 32640) >> 15
            b4L = (b4L * 32640) >> 15
            b5L = (b5L * 32640) >> 15
            b6L = (b6L * 32640) >> 15
            if dqL:
                sgd = dqL >> 15
                b1L += 128 if d1L >> 15 == sgd else -128
                b2L += 128 if d2L >> 15 == sgd else -128
                b3L += 128 if d3L >> 15 == sgd else -128
                b4L += 128 if d4L >> 15 == sgd else -128
                b5L += 128 if d5L >> 15 == sgd else -128
                b6L += 128 if d6L >> 15 == sgd else -128
                b1L = 32767 if b1L > 32767 else b1L
                b2L = 32767 if b2L > 32767 else b2L
                b3L = 32767 if b3L > 32767 else b3L
                b4L = 32767 if b4L > 32767 else b4L
                b5L = 32767 if b5L > 32767 else b5L
                b6L = 32767 if b6L > 32767 else b6L
            # DELAYA
            d6L, d5L, d4L, d3L, d2L, d1L = d5L, d4L, d3L, d2L, d1L, dqL
            r2L, r1L = r1L, r0
            p2L, p1L = p1L, p0
            a1L, a2L = ap1, ap2
            # FILTEP, FILTEZ, PREDIC: the next signal estimate
            wd1 = r0 + r0
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = r2L + r2L
            wd2 = 32767 if wd2 > 32767 else -32768 if wd2 < -32768 else wd2
            sp = ((ap1 * wd1) >> 15) + ((ap2 * wd2) >> 15)
            sp = 32767 if sp > 32767 else -32768 if sp < -32768 else sp
            szL = (
                ((b6L * (d6L + d6L)) >> 15) + ((b5L * (d5L + d5L)) >> 15)
                + ((b4L * (d4L + d4L)) >> 15) + ((b3L * (d3L + d3L)) >> 15)
                + ((b2L * (d2L + d2L)) >> 15) + ((b1L * (d1L + d1L)) >> 15)
            )  # fmt: skip
            szL = 32767 if szL > 32767 else -32768 if szL < -32768 else szL
            sL = sp + szL
            sL = 32767 if sL > 32767 else -32768 if sL < -32768 else sL

            # Higher band: SUBTRA, QUANTH, INVQAH, LOGSCH/SCALEH, then the predictor.
            eh = ((x_a - x_b) >> 14) - sH
            eh = 32767 if eh > 32767 else -32768 if eh < -32768 else eh
            magnitude = eh if eh >= 0 else -(eh + 1)
            large = 2 if magnitude >= (_HIGH_THRESHOLD * detH) >> 12 else 1
            code_high = IHN[large] if eh < 0 else IHP[large]
            dqH = (detH * qm2[code_high]) >> 15
            # LOGSCH, SCALEH: the scale factor for the next sample
            nbH = ((nbH * 127) >> 7) + high_step[code_high]
            nbH = 0 if nbH < 0 else _HIGH_NB_MAX if nbH > _HIGH_NB_MAX else nbH
            shift = 10 - (nbH >> 11)
            base = ilb[(nbH >> 6) & 31]
            detH = (base << -shift if shift < 0 else base >> shift) << 2
            # Block 4 of the higher band, the same steps.
            r0 = sH + dqH
            r0 = 32767 if r0 > 32767 else -32768 if r0 < -32768 else r0
            p0 = szH + dqH
            p0 = 32767 if p0 > 32767 else -32768 if p0 < -32768 else p0
            sg0 = p0 >> 15
            same1 = sg0 == p1H >> 15
            # UPPOL2: the second pole coefficient
            wd1 = a1H << 2
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = -wd1 if same1 else wd1
            wd2 = 32767 if wd2 > 32767 else wd2
            ap2 = (wd2 >> 7) + (128 if sg0 == p2H >> 15 else -128) + ((a2H * 32512) >> 15)
            ap2 = 12288 if ap2 > 12288 else -12288 if ap2 < -12288 else ap2
            # UPPOL1: the first, kept inside the stability triangle
            ap1 = (192 if same1 else -192) + ((a1H * 32640) >> 15)
            limit = 15360 - ap2
            ap1 = limit if ap1 > limit else -limit if ap1 < -limit else ap1
            # UPZERO: each zero tap leaks, then steps by the sign agreement of d with it
            b1H = (b1H * 32640) >> 15
            b2H = (b2H * 32640) >> 15
            b3H = (b3H * 32640) >> 15
            b4H = (b4H * 32640) >> 15
            b5H = (b5H * 32640) >> 15
            b6H = (b6H * 32640) >> 15
            if dqH:
                sgd = dqH >> 15
                b1H += 128 if d1H >> 15 == sgd else -128
                b2H += 128 if d2H >> 15 == sgd else -128
                b3H += 128 if d3H >> 15 == sgd else -128
                b4H += 128 if d4H >> 15 == sgd else -128
                b5H += 128 if d5H >> 15 == sgd else -128
                b6H += 128 if d6H >> 15 == sgd else -128
                b1H = 32767 if b1H > 32767 else b1H
                b2H = 32767 if b2H > 32767 else b2H
                b3H = 32767 if b3H > 32767 else b3H
                b4H = 32767 if b4H > 32767 else b4H
                b5H = 32767 if b5H > 32767 else b5H
                b6H = 32767 if b6H > 32767 else b6H
            # DELAYA
            d6H, d5H, d4H, d3H, d2H, d1H = d5H, d4H, d3H, d2H, d1H, dqH
            r2H, r1H = r1H, r0
            p2H, p1H = p1H, p0
            a1H, a2H = ap1, ap2
            # FILTEP, FILTEZ, PREDIC: the next signal estimate
            wd1 = r0 + r0
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = r2H + r2H
            wd2 = 32767 if wd2 > 32767 else -32768 if wd2 < -32768 else wd2
            sp = ((ap1 * wd1) >> 15) + ((ap2 * wd2) >> 15)
            sp = 32767 if sp > 32767 else -32768 if sp < -32768 else sp
            szH = (
                ((b6H * (d6H + d6H)) >> 15) + ((b5H * (d5H + d5H)) >> 15)
                + ((b4H * (d4H + d4H)) >> 15) + ((b3H * (d3H + d3H)) >> 15)
                + ((b2H * (d2H + d2H)) >> 15) + ((b1H * (d1H + d1H)) >> 15)
            )  # fmt: skip
            szH = 32767 if szH > 32767 else -32768 if szH < -32768 else szH
            sH = sp + szH
            sH = 32767 if sH > 32767 else -32768 if sH < -32768 else sH

            out[index] = (code_high << 6) | code_low
        # fmt: off
        low.set_state((sL, szL, r1L, r2L, p1L, p2L, a1L, a2L, b1L, b2L, b3L, b4L, b5L, b6L,
         d1L, d2L, d3L, d4L, d5L, d6L, nbL, detL))
        high.set_state((sH, szH, r1H, r2H, p1H, p2H, a1H, a2H, b1H, b2H, b3H, b4H, b5H, b6H,
         d1H, d2H, d3H, d4H, d5H, d6H, nbH, detH))
        # fmt: on
        return bytes(out)


class G722Decoder:
    """G.722 code bytes in (64 kbit/s mode), 16 kHz 16-bit samples out (two per byte)."""

    __slots__ = ("_high", "_low", "_xd", "_xs")

    def __init__(self) -> None:
        self._low = _Band(32)
        self._high = _Band(8)
        self._xd = [0] * 12  # rl - rh, oldest first
        self._xs = [0] * 12  # rl + rh, oldest first

    def decode(self, data: bytes) -> array[int]:
        """Samples for ``data``, continuing the stream (state in locals, as in the encoder)."""
        out = array("h", bytes(4 * len(data)))
        low, high = self._low, self._high
        xd, xs = self._xd, self._xs
        # fmt: off
        (sL, szL, r1L, r2L, p1L, p2L, a1L, a2L, b1L, b2L, b3L, b4L, b5L, b6L,
         d1L, d2L, d3L, d4L, d5L, d6L, nbL, detL) = low.state()
        (sH, szH, r1H, r2H, p1H, p2H, a1H, a2H, b1H, b2H, b3H, b4H, b5H, b6H,
         d1H, d2H, d3H, d4H, d5H, d6H, nbH, detH) = high.state()
        # fmt: on
        h0, h1, h2, h3, h4, h5, h6, h7, h8, h9, h10, h11 = QMF_EVEN
        ilb = ILB
        qm6 = QM6
        qm4 = QM4
        qm2 = QM2
        low_step = _LOW_STEP
        high_step = _HIGH_STEP
        for index, code in enumerate(data):
            code_low = code & 0x3F
            code_high = code >> 6
            # Lower band: INVQBL (6-bit output), RECONS, limit; the predictor sees 4 bits only.
            rlow = sL + ((detL * qm6[code_low]) >> 15)
            rlow = 16383 if rlow > 16383 else -16384 if rlow < -16384 else rlow
            code4 = code_low >> 2
            dqL = (detL * qm4[code4]) >> 15
            # LOGSCL, SCALEL: the scale factor for the next sample
            nbL = ((nbL * 127) >> 7) + low_step[code4]
            nbL = 0 if nbL < 0 else _LOW_NB_MAX if nbL > _LOW_NB_MAX else nbL
            shift = 8 - (nbL >> 11)
            base = ilb[(nbL >> 6) & 31]
            detL = (base << -shift if shift < 0 else base >> shift) << 2
            # Block 4 of the lower band: RECONS, PARREC, UPPOL2, UPPOL1, UPZERO, DELAYA, FILTEP,
            # FILTEZ, PREDIC. Differences stay within about 10 230, so d + d needs no saturation.
            r0 = sL + dqL
            r0 = 32767 if r0 > 32767 else -32768 if r0 < -32768 else r0
            p0 = szL + dqL
            p0 = 32767 if p0 > 32767 else -32768 if p0 < -32768 else p0
            sg0 = p0 >> 15
            same1 = sg0 == p1L >> 15
            # UPPOL2: the second pole coefficient
            wd1 = a1L << 2
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = -wd1 if same1 else wd1
            wd2 = 32767 if wd2 > 32767 else wd2
            ap2 = (wd2 >> 7) + (128 if sg0 == p2L >> 15 else -128) + ((a2L * 32512) >> 15)
            ap2 = 12288 if ap2 > 12288 else -12288 if ap2 < -12288 else ap2
            # UPPOL1: the first, kept inside the stability triangle
            ap1 = (192 if same1 else -192) + ((a1L * 32640) >> 15)
            limit = 15360 - ap2
            ap1 = limit if ap1 > limit else -limit if ap1 < -limit else ap1
            # UPZERO: each zero tap leaks, then steps by the sign agreement of d with it
            b1L = (b1L * 32640) >> 15
            b2L = (b2L * 32640) >> 15
            b3L = (b3L * 32640) >> 15
            b4L = (b4L * 32640) >> 15
            b5L = (b5L * 32640) >> 15
            b6L = (b6L * 32640) >> 15
            if dqL:
                sgd = dqL >> 15
                b1L += 128 if d1L >> 15 == sgd else -128
                b2L += 128 if d2L >> 15 == sgd else -128
                b3L += 128 if d3L >> 15 == sgd else -128
                b4L += 128 if d4L >> 15 == sgd else -128
                b5L += 128 if d5L >> 15 == sgd else -128
                b6L += 128 if d6L >> 15 == sgd else -128
                b1L = 32767 if b1L > 32767 else b1L
                b2L = 32767 if b2L > 32767 else b2L
                b3L = 32767 if b3L > 32767 else b3L
                b4L = 32767 if b4L > 32767 else b4L
                b5L = 32767 if b5L > 32767 else b5L
                b6L = 32767 if b6L > 32767 else b6L
            # DELAYA
            d6L, d5L, d4L, d3L, d2L, d1L = d5L, d4L, d3L, d2L, d1L, dqL
            r2L, r1L = r1L, r0
            p2L, p1L = p1L, p0
            a1L, a2L = ap1, ap2
            # FILTEP, FILTEZ, PREDIC: the next signal estimate
            wd1 = r0 + r0
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = r2L + r2L
            wd2 = 32767 if wd2 > 32767 else -32768 if wd2 < -32768 else wd2
            sp = ((ap1 * wd1) >> 15) + ((ap2 * wd2) >> 15)
            sp = 32767 if sp > 32767 else -32768 if sp < -32768 else sp
            szL = (
                ((b6L * (d6L + d6L)) >> 15) + ((b5L * (d5L + d5L)) >> 15)
                + ((b4L * (d4L + d4L)) >> 15) + ((b3L * (d3L + d3L)) >> 15)
                + ((b2L * (d2L + d2L)) >> 15) + ((b1L * (d1L + d1L)) >> 15)
            )  # fmt: skip
            szL = 32767 if szL > 32767 else -32768 if szL < -32768 else szL
            sL = sp + szL
            sL = 32767 if sL > 32767 else -32768 if sL < -32768 else sL

            # Higher band.
            dqH = (detH * qm2[code_high]) >> 15
            rhigh = sH + dqH
            rhigh = 16383 if rhigh > 16383 else -16384 if rhigh < -16384 else rhigh
            # LOGSCH, SCALEH: the scale factor for the next sample
            nbH = ((nbH * 127) >> 7) + high_step[code_high]
            nbH = 0 if nbH < 0 else _HIGH_NB_MAX if nbH > _HIGH_NB_MAX else nbH
            shift = 10 - (nbH >> 11)
            base = ilb[(nbH >> 6) & 31]
            detH = (base << -shift if shift < 0 else base >> shift) << 2
            # Block 4 of the higher band, the same steps.
            r0 = sH + dqH
            r0 = 32767 if r0 > 32767 else -32768 if r0 < -32768 else r0
            p0 = szH + dqH
            p0 = 32767 if p0 > 32767 else -32768 if p0 < -32768 else p0
            sg0 = p0 >> 15
            same1 = sg0 == p1H >> 15
            # UPPOL2: the second pole coefficient
            wd1 = a1H << 2
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = -wd1 if same1 else wd1
            wd2 = 32767 if wd2 > 32767 else wd2
            ap2 = (wd2 >> 7) + (128 if sg0 == p2H >> 15 else -128) + ((a2H * 32512) >> 15)
            ap2 = 12288 if ap2 > 12288 else -12288 if ap2 < -12288 else ap2
            # UPPOL1: the first, kept inside the stability triangle
            ap1 = (192 if same1 else -192) + ((a1H * 32640) >> 15)
            limit = 15360 - ap2
            ap1 = limit if ap1 > limit else -limit if ap1 < -limit else ap1
            # UPZERO: each zero tap leaks, then steps by the sign agreement of d with it
            b1H = (b1H * 32640) >> 15
            b2H = (b2H * 32640) >> 15
            b3H = (b3H * 32640) >> 15
            b4H = (b4H * 32640) >> 15
            b5H = (b5H * 32640) >> 15
            b6H = (b6H * 32640) >> 15
            if dqH:
                sgd = dqH >> 15
                b1H += 128 if d1H >> 15 == sgd else -128
                b2H += 128 if d2H >> 15 == sgd else -128
                b3H += 128 if d3H >> 15 == sgd else -128
                b4H += 128 if d4H >> 15 == sgd else -128
                b5H += 128 if d5H >> 15 == sgd else -128
                b6H += 128 if d6H >> 15 == sgd else -128
                b1H = 32767 if b1H > 32767 else b1H
                b2H = 32767 if b2H > 32767 else b2H
                b3H = 32767 if b3H > 32767 else b3H
                b4H = 32767 if b4H > 32767 else b4H
                b5H = 32767 if b5H > 32767 else b5H
                b6H = 32767 if b6H > 32767 else b6H
            # DELAYA
            d6H, d5H, d4H, d3H, d2H, d1H = d5H, d4H, d3H, d2H, d1H, dqH
            r2H, r1H = r1H, r0
            p2H, p1H = p1H, p0
            a1H, a2H = ap1, ap2
            # FILTEP, FILTEZ, PREDIC: the next signal estimate
            wd1 = r0 + r0
            wd1 = 32767 if wd1 > 32767 else -32768 if wd1 < -32768 else wd1
            wd2 = r2H + r2H
            wd2 = 32767 if wd2 > 32767 else -32768 if wd2 < -32768 else wd2
            sp = ((ap1 * wd1) >> 15) + ((ap2 * wd2) >> 15)
            sp = 32767 if sp > 32767 else -32768 if sp < -32768 else sp
            szH = (
                ((b6H * (d6H + d6H)) >> 15) + ((b5H * (d5H + d5H)) >> 15)
                + ((b4H * (d4H + d4H)) >> 15) + ((b3H * (d3H + d3H)) >> 15)
                + ((b2H * (d2H + d2H)) >> 15) + ((b1H * (d1H + d1H)) >> 15)
            )  # fmt: skip
            szH = 32767 if szH > 32767 else -32768 if szH < -32768 else szH
            sH = sp + szH
            sH = 32767 if sH > 32767 else -32768 if sH < -32768 else sH

            # Receive QMF: out(2p) = 2 sum h(2i) xd(p - i), out(2p + 1) = 2 sum h(2i + 1) xs(p - i).
            del xd[0], xs[0]
            xd.append(rlow - rhigh)
            xs.append(rlow + rhigh)
            even = (
                h0 * xd[11] + h1 * xd[10] + h2 * xd[9] + h3 * xd[8] + h4 * xd[7] + h5 * xd[6]
                + h6 * xd[5] + h7 * xd[4] + h8 * xd[3] + h9 * xd[2] + h10 * xd[1] + h11 * xd[0]
            ) >> 11  # fmt: skip
            odd = (
                h11 * xs[11] + h10 * xs[10] + h9 * xs[9] + h8 * xs[8] + h7 * xs[7] + h6 * xs[6]
                + h5 * xs[5] + h4 * xs[4] + h3 * xs[3] + h2 * xs[2] + h1 * xs[1] + h0 * xs[0]
            ) >> 11  # fmt: skip
            out[2 * index] = 32767 if even > 32767 else -32768 if even < -32768 else even
            out[2 * index + 1] = 32767 if odd > 32767 else -32768 if odd < -32768 else odd
        # fmt: off
        low.set_state((sL, szL, r1L, r2L, p1L, p2L, a1L, a2L, b1L, b2L, b3L, b4L, b5L, b6L,
         d1L, d2L, d3L, d4L, d5L, d6L, nbL, detL))
        high.set_state((sH, szH, r1H, r2H, p1H, p2H, a1H, a2H, b1H, b2H, b3H, b4H, b5H, b6H,
         d1H, d2H, d3H, d4H, d5H, d6H, nbH, detH))
        # fmt: on
        return out

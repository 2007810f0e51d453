//! Turning test statistics into scores in [0, 1].
//!
//! The Gaussian tail is computed with a branch-free rational/exponential approximation
//! (Numerical Recipes' `erfcc`, fractional error < 1.2e-7 everywhere) over an exponential written
//! with plain arithmetic and bit manipulation, so loops that call it vectorise on stable Rust.
//! Tests compare both against `statrs` and `f64::exp`.

const LOG2_E: f64 = std::f64::consts::LOG2_E;
/// ln 2 split in a high part with trailing zero bits (exact products with small k) and the rest.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
/// 1.5 · 2^52: adding it rounds a double of magnitude < 2^51 to the nearest integer and leaves
/// that integer in the low mantissa bits.
const ROUND_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `a * b + c` without `mul_add`: on the baseline x86-64 target `mul_add` is a libm call
/// (no FMA instruction), which neither inlines nor vectorises.
#[inline(always)]
fn madd(a: f64, b: f64, c: f64) -> f64 {
    a * b + c
}

/// `e^x`, accurate to a few ulp for x in [-708, 709]; inputs outside are clamped (so the result
/// never overflows to infinity and is never exactly zero). Vectorisable: no branch, no libm call.
#[inline(always)]
pub fn exp_fast(x: f64) -> f64 {
    let x = x.clamp(-708.0, 709.0);
    let t = madd(x, LOG2_E, ROUND_MAGIC);
    let k = t - ROUND_MAGIC;
    let r = (x - k * LN2_HI) - k * LN2_LO;
    // Degree-10 Taylor series of e^r on |r| <= ln2/2 (next term < 2e-13 relative), evaluated
    // with Estrin's scheme: a shallow dependency tree instead of one long Horner chain.
    let r2 = r * r;
    let r4 = r2 * r2;
    let r8 = r4 * r4;
    let p01 = 1.0 + r;
    let p23 = madd(r, 1.0 / 6.0, 0.5);
    let p45 = madd(r, 1.0 / 120.0, 1.0 / 24.0);
    let p67 = madd(r, 1.0 / 5_040.0, 1.0 / 720.0);
    let p89 = madd(r, 1.0 / 362_880.0, 1.0 / 40_320.0);
    let p10 = 1.0 / 3_628_800.0;
    let p03 = madd(r2, p23, p01);
    let p47 = madd(r2, p67, p45);
    let p07 = madd(r4, p47, p03);
    let p = madd(r8, madd(r2, p10, p89), p07);
    let ki = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f64::from_bits(ki.wrapping_add(1023) << 52);
    p * scale
}

/// Complementary error function of a non-negative argument (fractional error < 1.2e-7).
#[inline(always)]
fn erfc_nonneg(z: f64) -> f64 {
    let t = 1.0 / madd(0.5, z, 1.0);
    // The degree-9 polynomial in t of Numerical Recipes' erfcc, by Estrin's scheme.
    let t2 = t * t;
    let t4 = t2 * t2;
    let t8 = t4 * t4;
    let c01 = madd(t, 1.000_023_68, -1.265_512_23);
    let c23 = madd(t, 0.096_784_18, 0.374_091_96);
    let c45 = madd(t, 0.278_868_07, -0.186_288_06);
    let c67 = madd(t, 1.488_515_87, -1.135_203_98);
    let c89 = madd(t, 0.170_872_77, -0.822_152_23);
    let c03 = madd(t2, c23, c01);
    let c47 = madd(t2, c67, c45);
    let c07 = madd(t4, c47, c03);
    let p = madd(t8, c89, c07);
    t * exp_fast(p - z * z)
}

/// Two-sided Gaussian tail probability `P(|Z| >= |z|)` for a standard normal `Z`.
#[inline(always)]
pub fn two_sided_tail(z: f64) -> f64 {
    erfc_nonneg(z.abs() * std::f64::consts::FRAC_1_SQRT_2)
}

/// Score in [0, 1] of a z-score: `1 - P(|Z| >= |z|)`. NaN maps to 0 (no evidence).
#[inline(always)]
pub fn score_from_z(z: f64) -> f64 {
    clamp_score(1.0 - two_sided_tail(z))
}

/// Clamps to [0, 1], mapping NaN to 0.
#[inline(always)]
#[allow(clippy::manual_clamp)] // `clamp` keeps NaN; this maps it to 0
pub fn clamp_score(s: f64) -> f64 {
    s.max(0.0).min(1.0)
}

simd_dispatch! {
    /// Turns z-scores into scores in place: `out[i] = score_from_z(out[i])`. Vectorised: the
    /// baseline target's 2 lanes, or 4 / 8 lanes on CPUs with AVX2 / AVX-512F (chosen at run
    /// time, bit-identical results).
    pub fn scores_from_z_in_place(out: &mut [f64]) {
        for o in out.iter_mut() {
            *o = score_from_z(*o);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispatched_kernel_is_bit_identical_to_the_scalar_function() {
        // Exercises the AVX-512 or AVX2 path where the CPU has it, the generic one elsewhere.
        let zs: Vec<f64> = (0..1003)
            .map(|i| (i as f64 - 500.0) * 0.0173)
            .chain([f64::NAN, f64::INFINITY, -40.0])
            .collect();
        let mut out = zs.clone();
        scores_from_z_in_place(&mut out);
        for (z, s) in zs.iter().zip(&out) {
            assert_eq!(s.to_bits(), score_from_z(*z).to_bits(), "z = {z}");
        }
    }

    #[test]
    fn exp_fast_matches_std_exp() {
        let mut x = -700.0;
        while x < 700.0 {
            let (a, b) = (exp_fast(x), x.exp());
            assert!(((a - b) / b).abs() < 1e-12, "x={x} fast={a} std={b}");
            x += 0.37;
        }
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-1e9) > 0.0 && exp_fast(1e9).is_finite());
    }

    #[test]
    fn tail_matches_statrs_within_fractional_error() {
        let mut z = 0.0;
        while z < 37.0 {
            let exact = statrs::function::erf::erfc(z / std::f64::consts::SQRT_2);
            let fast = two_sided_tail(z);
            assert!(
                ((fast - exact) / exact).abs() < 2e-7,
                "z={z} fast={fast} exact={exact}"
            );
            z += 0.01;
        }
    }

    #[test]
    fn known_answers() {
        // P(|Z| >= 1.959964) = 0.05, P(|Z| >= 3) = 0.0026998
        assert!((two_sided_tail(1.959_964) - 0.05).abs() < 1e-7);
        assert!((two_sided_tail(-3.0) - 0.002_699_796).abs() < 1e-8);
        assert_eq!(score_from_z(0.0), clamp_score(1.0 - two_sided_tail(0.0)));
        assert!(score_from_z(0.0) < 1e-6);
        assert_eq!(score_from_z(f64::INFINITY), 1.0);
        assert_eq!(score_from_z(f64::NAN), 0.0);
    }
}

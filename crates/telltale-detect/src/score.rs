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
    // Taylor series of e^r on |r| <= ln2/2: the degree-12 term is below 1e-15.
    let mut p = 1.0 / 479_001_600.0;
    p = madd(p, r, 1.0 / 39_916_800.0);
    p = madd(p, r, 1.0 / 3_628_800.0);
    p = madd(p, r, 1.0 / 362_880.0);
    p = madd(p, r, 1.0 / 40_320.0);
    p = madd(p, r, 1.0 / 5_040.0);
    p = madd(p, r, 1.0 / 720.0);
    p = madd(p, r, 1.0 / 120.0);
    p = madd(p, r, 1.0 / 24.0);
    p = madd(p, r, 1.0 / 6.0);
    p = madd(p, r, 0.5);
    p = madd(p, r, 1.0);
    p = madd(p, r, 1.0);
    let ki = t.to_bits().wrapping_sub(ROUND_MAGIC.to_bits());
    let scale = f64::from_bits(ki.wrapping_add(1023) << 52);
    p * scale
}

/// Complementary error function of a non-negative argument (fractional error < 1.2e-7).
#[inline(always)]
fn erfc_nonneg(z: f64) -> f64 {
    let t = 1.0 / madd(0.5, z, 1.0);
    let mut p = 0.170_872_77;
    p = madd(p, t, -0.822_152_23);
    p = madd(p, t, 1.488_515_87);
    p = madd(p, t, -1.135_203_98);
    p = madd(p, t, 0.278_868_07);
    p = madd(p, t, -0.186_288_06);
    p = madd(p, t, 0.096_784_18);
    p = madd(p, t, 0.374_091_96);
    p = madd(p, t, 1.000_023_68);
    p = madd(p, t, -1.265_512_23);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_fast_matches_std_exp() {
        let mut x = -700.0;
        while x < 700.0 {
            let (a, b) = (exp_fast(x), x.exp());
            assert!(((a - b) / b).abs() < 1e-14, "x={x} fast={a} std={b}");
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

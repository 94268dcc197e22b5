//! The roofline of a device from its measured ceilings, and where an op lands
//! on it. The compute roof is the ceiling matmul's GFLOP/s; the memory roof is
//! the ceiling copy's traffic, bytes read plus bytes written per second (twice
//! the bytes copied), since an op's minimum bytes count both. An op of
//! arithmetic intensity I (FLOPs per minimum byte) can reach at most
//! min(compute, memory × I); its share of the roof is what it reached over that.

use tessera_runtime::Ceilings;

/// A device's two roofs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roof {
    pub gflop_per_s: f64,
    /// Memory traffic (read + written) per second, GB/s.
    pub gb_per_s: f64,
}

/// Which roof limits an op at its intensity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bound {
    Memory,
    Compute,
}

impl Bound {
    pub fn name(self) -> &'static str {
        match self {
            Bound::Memory => "memory",
            Bound::Compute => "compute",
        }
    }
}

/// An op placed on a roofline.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Placement {
    /// FLOPs per minimum byte.
    pub intensity: f64,
    pub gflop_per_s: f64,
    pub gb_per_s: f64,
    /// The roof at this intensity, GFLOP/s.
    pub attainable: f64,
    /// Achieved over attainable.
    pub share_of_roof: f64,
    /// Achieved GFLOP/s over the compute ceiling.
    pub share_of_compute: f64,
    /// Achieved bytes/s over the memory ceiling.
    pub share_of_memory: f64,
    pub bound: Bound,
}

impl Roof {
    pub fn from_ceilings(c: &Ceilings) -> Roof {
        Roof {
            gflop_per_s: c.matmul_gflop_per_s,
            gb_per_s: 2.0 * c.copy_gb_per_s,
        }
    }

    /// The intensity where the two roofs meet, FLOPs per byte.
    pub fn ridge(&self) -> f64 {
        self.gflop_per_s / self.gb_per_s
    }

    /// The most GFLOP/s an op of `intensity` FLOPs per byte can reach.
    pub fn attainable(&self, intensity: f64) -> f64 {
        self.gflop_per_s.min(self.gb_per_s * intensity)
    }

    /// Where an op of `flops` and `bytes` taking `seconds` lands; `None` when
    /// it did no arithmetic, moved nothing or took no time (no point on a
    /// logarithmic plot).
    pub fn place(&self, flops: f64, bytes: f64, seconds: f64) -> Option<Placement> {
        if !(flops > 0.0 && bytes > 0.0 && seconds > 0.0) {
            return None;
        }
        let intensity = flops / bytes;
        let gflop_per_s = flops / seconds / 1e9;
        let gb_per_s = bytes / seconds / 1e9;
        let attainable = self.attainable(intensity);
        Some(Placement {
            intensity,
            gflop_per_s,
            gb_per_s,
            attainable,
            share_of_roof: gflop_per_s / attainable,
            share_of_compute: gflop_per_s / self.gflop_per_s,
            share_of_memory: gb_per_s / self.gb_per_s,
            bound: if intensity < self.ridge() {
                Bound::Memory
            } else {
                Bound::Compute
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roof() -> Roof {
        // A copy of 50 GB/s is 100 GB/s of traffic; 1,000 GFLOP/s of matmul.
        Roof::from_ceilings(&Ceilings {
            copy_gb_per_s: 50.0,
            matmul_gflop_per_s: 1000.0,
            matmul_shape: "512x2560x2560".into(),
            matmul_kernel: String::new(),
            copy_kind: String::new(),
        })
    }

    #[test]
    fn the_ridge_is_where_the_roofs_meet() {
        let r = roof();
        assert_eq!(r.gb_per_s, 100.0);
        assert_eq!(r.ridge(), 10.0);
        assert_eq!(r.attainable(1.0), 100.0);
        assert_eq!(r.attainable(10.0), 1000.0);
        assert_eq!(r.attainable(50.0), 1000.0);
    }

    #[test]
    fn a_memory_bound_op_is_read_against_the_bandwidth() {
        // 2 GFLOP over 1 GB in 20 ms: intensity 2, 100 GFLOP/s, 50 GB/s; the
        // roof there is 200 GFLOP/s.
        let p = roof().place(2e9, 1e9, 0.02).unwrap();
        assert_eq!(p.intensity, 2.0);
        assert!((p.gflop_per_s - 100.0).abs() < 1e-9);
        assert!((p.gb_per_s - 50.0).abs() < 1e-9);
        assert_eq!(p.attainable, 200.0);
        assert!((p.share_of_roof - 0.5).abs() < 1e-12);
        assert!((p.share_of_memory - 0.5).abs() < 1e-12);
        assert!((p.share_of_compute - 0.1).abs() < 1e-12);
        assert_eq!(p.bound, Bound::Memory);
    }

    #[test]
    fn a_compute_bound_op_is_read_against_the_matmul() {
        // 40 GFLOP over 1 GB in 0.1 s: intensity 40, 400 GFLOP/s of 1,000.
        let p = roof().place(40e9, 1e9, 0.1).unwrap();
        assert_eq!(p.bound, Bound::Compute);
        assert_eq!(p.attainable, 1000.0);
        assert!((p.share_of_roof - 0.4).abs() < 1e-12);
    }

    #[test]
    fn ops_without_arithmetic_have_no_place() {
        assert_eq!(roof().place(0.0, 1e6, 0.1), None);
        assert_eq!(roof().place(1e6, 0.0, 0.1), None);
        assert_eq!(roof().place(1e6, 1e6, 0.0), None);
    }
}

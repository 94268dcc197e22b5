//! The WGSL sources (`shaders/*.wgsl`, embedded) and the small preprocessor
//! that builds their variants: `//#if flag`, `//#else`, `//#endif` lines keep
//! or drop the lines between them, so one file serves Q8_0 and f32 weights,
//! in-place and out-of-place forms, and adapters with or without subgroups.

use tessera_backend::BackendError;

/// Shaders by stem: the same stems as the CPU ops and the CUDA kernels.
const SOURCES: &[(&str, &str)] = &[
    ("add", include_str!("../../../shaders/add.wgsl")),
    ("attention", include_str!("../../../shaders/attention.wgsl")),
    ("copy", include_str!("../../../shaders/copy.wgsl")),
    ("embedding", include_str!("../../../shaders/embedding.wgsl")),
    (
        "matmul_q8_0",
        include_str!("../../../shaders/matmul_q8_0.wgsl"),
    ),
    ("reduce", include_str!("../../../shaders/reduce.wgsl")),
    ("rms_norm", include_str!("../../../shaders/rms_norm.wgsl")),
    ("rope", include_str!("../../../shaders/rope.wgsl")),
    (
        "score_head",
        include_str!("../../../shaders/score_head.wgsl"),
    ),
    ("swiglu", include_str!("../../../shaders/swiglu.wgsl")),
];

fn raw(stem: &str) -> Result<&'static str, BackendError> {
    SOURCES
        .iter()
        .find(|(s, _)| *s == stem)
        .map(|(_, src)| *src)
        .ok_or_else(|| BackendError::Device(format!("wgpu: no shader named '{stem}'")))
}

/// The source of `stem` with `flags` set. `//#include reduce` pastes the
/// shared workgroup reductions (preprocessed with the same flags).
pub fn source(stem: &str, flags: &[&str]) -> Result<String, BackendError> {
    let mut out = String::new();
    // Each level: (this branch is kept, the enclosing level is kept).
    let mut stack: Vec<(bool, bool)> = Vec::new();
    let active = |stack: &[(bool, bool)]| stack.last().is_none_or(|&(on, outer)| on && outer);
    for (number, line) in raw(stem)?.lines().enumerate() {
        let trimmed = line.trim();
        let bad = |what: &str| {
            BackendError::Device(format!(
                "wgpu: shaders/{stem}.wgsl line {}: {what}",
                number + 1
            ))
        };
        if let Some(flag) = trimmed.strip_prefix("//#if ") {
            let outer = active(&stack);
            stack.push((flags.contains(&flag.trim()), outer));
        } else if trimmed == "//#else" {
            let top = stack.last_mut().ok_or_else(|| bad("#else without #if"))?;
            top.0 = !top.0;
        } else if trimmed == "//#endif" {
            stack.pop().ok_or_else(|| bad("#endif without #if"))?;
        } else if let Some(name) = trimmed.strip_prefix("//#include ") {
            if active(&stack) {
                out.push_str(&source(name.trim(), flags)?);
            }
        } else if active(&stack) {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !stack.is_empty() {
        return Err(BackendError::Device(format!(
            "wgpu: shaders/{stem}.wgsl: #if without #endif"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_preprocesses_to_balanced_source() {
        for (stem, _) in SOURCES {
            for flags in [
                &[][..],
                &["q8_0"],
                &["inplace", "subgroups"],
                &["subgroups"],
            ] {
                let src = source(stem, flags).expect("preprocesses");
                assert!(!src.contains("//#"), "{stem}: directive left in output");
            }
        }
    }

    #[test]
    fn every_variant_passes_naga_validation() {
        // Validates without a device: a shader error is caught on any machine.
        let variants: &[(&str, &[&str])] = &[
            ("add", &[]),
            ("attention", &[]),
            ("attention", &["subgroups"]),
            ("copy", &[]),
            ("embedding", &[]),
            ("embedding", &["q8_0"]),
            ("matmul_q8_0", &[]),
            ("matmul_q8_0", &["q8_0"]),
            ("rms_norm", &[]),
            ("rms_norm", &["inplace"]),
            ("rms_norm", &["subgroups"]),
            ("rope", &[]),
            ("score_head", &[]),
            ("score_head", &["q8_0", "subgroups"]),
            ("swiglu", &[]),
        ];
        for (stem, flags) in variants {
            let src = source(stem, flags).expect("preprocesses");
            let module = naga::front::wgsl::parse_str(&src)
                .unwrap_or_else(|e| panic!("{stem} {flags:?}: {}", e.emit_to_string(&src)));
            let mut validator = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            );
            validator
                .validate(&module)
                .unwrap_or_else(|e| panic!("{stem} {flags:?}: {}", e.emit_to_string(&src)));
        }
    }
}

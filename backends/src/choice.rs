//! What the user asked for, as one typed value.
//!
//! The CLI reads `--backend`, `MONTANA_BACKEND`, `MONTANA_DISABLE_BACKENDS`
//! and the GPU probe variables (`MONTANA_GPU_ALLOW_CPU`,
//! `VK_ICD_FILENAMES` / `VK_DRIVER_FILES`) once, with
//! [`BackendChoice::parse`], and passes the result down; no library code
//! reads the environment. [`crate::Registry::with_choice`] checks the names
//! (an unknown one is an error naming the flag or variable it came from) and
//! [`crate::Registry::resolve`] applies the pin.
//!
//! The variables mean the same for every verb. Precedence: a `--backend`
//! other than `auto` wins over `MONTANA_BACKEND`; `--backend auto` (the
//! default of the `vdf` verbs) leaves `MONTANA_BACKEND` in force, so a test
//! run with the variable set exercises that backend through every verb.

use std::collections::BTreeSet;
use std::fmt;

use thiserror::Error;

/// Environment variable forcing one backend.
pub const ENV_BACKEND: &str = "MONTANA_BACKEND";
/// Environment variable hiding a comma-separated list of backends.
pub const ENV_DISABLE: &str = "MONTANA_DISABLE_BACKENDS";
/// Environment variable letting `auto` choose a software GPU adapter.
pub const ENV_GPU_ALLOW_CPU: &str = "MONTANA_GPU_ALLOW_CPU";
/// Environment variables picking a Vulkan driver by its manifest.
pub const ENV_VK_DRIVERS: [&str; 2] = ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"];
/// The name that means "the best available".
pub const AUTO: &str = "auto";
/// The command-line flag naming a backend.
pub const FLAG_BACKEND: &str = "--backend";

/// Where a pin came from: errors about it name the source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--backend NAME`.
    Flag,
    /// `MONTANA_BACKEND=NAME`.
    Env,
}

/// Which (suite, operation) pairs a pin applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PinScope {
    /// Every pair the backend supports; the ranking serves the others
    /// (`MONTANA_BACKEND`, for every verb).
    WhereSupported,
    /// As `WhereSupported`, but a backend supporting no operation of the
    /// suite is an error, not a silent `auto` (`montana start --backend`).
    SomeOperation,
    /// Exactly the pair asked for, or an error (`montana vdf ... --backend`).
    Exactly,
}

/// One backend the user named.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pin {
    pub name: String,
    pub origin: Origin,
    pub scope: PinScope,
}

/// When the GPU backend may load Vulkan and use a software adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GpuPolicy {
    /// `MONTANA_GPU_ALLOW_CPU=1`: `auto` may choose a software adapter,
    /// and probing is worth its cost.
    pub allow_cpu: bool,
    /// `VK_ICD_FILENAMES` / `VK_DRIVER_FILES` pick a driver: probe it.
    pub driver_chosen: bool,
}

impl GpuPolicy {
    /// From the variables' values (`None`: unset).
    pub fn parse(allow_cpu: Option<&str>, vk_drivers: &[Option<&str>]) -> Self {
        GpuPolicy {
            allow_cpu: allow_cpu.is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes")),
            driver_chosen: vk_drivers.iter().any(|v| v.is_some_and(|s| !s.is_empty())),
        }
    }
}

/// The user's whole backend choice; see the module docs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackendChoice {
    pub pin: Option<Pin>,
    /// Backends hidden by `MONTANA_DISABLE_BACKENDS`: unavailable, never chosen.
    pub disabled: BTreeSet<String>,
    /// The raw `MONTANA_DISABLE_BACKENDS` value, for error lines.
    pub disabled_text: String,
    pub gpu: GpuPolicy,
}

/// The raw inputs, as the CLI read them (`None`: flag absent, variable unset).
#[derive(Clone, Copy, Debug, Default)]
pub struct ChoiceInputs<'a> {
    pub flag: Option<&'a str>,
    /// What the verb's `--backend` means (see [`PinScope`]).
    pub flag_scope: Option<PinScope>,
    pub env_backend: Option<&'a str>,
    pub env_disable: Option<&'a str>,
    pub gpu: GpuPolicy,
}

impl BackendChoice {
    /// Parses the inputs. Names are checked against the backends by
    /// [`crate::Registry::with_choice`]; this only shapes them.
    pub fn parse(inputs: ChoiceInputs<'_>) -> Self {
        let named = |s: Option<&str>| {
            s.map(str::trim)
                .filter(|s| !s.is_empty() && *s != AUTO)
                .map(str::to_string)
        };
        let pin = match named(inputs.flag) {
            Some(name) => Some(Pin {
                name,
                origin: Origin::Flag,
                scope: inputs.flag_scope.unwrap_or(PinScope::Exactly),
            }),
            None => named(inputs.env_backend).map(|name| Pin {
                name,
                origin: Origin::Env,
                scope: PinScope::WhereSupported,
            }),
        };
        let disabled_text = inputs.env_disable.unwrap_or_default().to_string();
        BackendChoice {
            pin,
            disabled: disabled_text
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            disabled_text,
            gpu: inputs.gpu,
        }
    }

    /// `auto` with nothing disabled: what tests and library callers use.
    pub fn auto() -> Self {
        BackendChoice::default()
    }

    /// Pins `name` from the command line with `scope` (`auto` clears a
    /// flag pin, leaving `MONTANA_BACKEND`'s).
    pub fn pinned(name: &str, scope: PinScope) -> Self {
        BackendChoice::parse(ChoiceInputs {
            flag: Some(name),
            flag_scope: Some(scope),
            ..ChoiceInputs::default()
        })
    }

    /// The pinned backend's name, if any.
    pub fn pin_name(&self) -> Option<&str> {
        self.pin.as_ref().map(|p| p.name.as_str())
    }
}

/// Why the choice cannot be served; one line naming its source.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ChoiceError {
    /// Came from an environment variable: the line names it, since the
    /// command line shows nothing wrong.
    #[error("{var}={value}: {source}")]
    Env {
        var: &'static str,
        value: String,
        source: crate::SelectError,
    },
    #[error("{0}")]
    Select(#[from] crate::SelectError),
}

impl ChoiceError {
    /// `source` attributed to where `pin` came from.
    pub fn from_pin(pin: &Pin, source: crate::SelectError) -> Self {
        match pin.origin {
            Origin::Flag => ChoiceError::Select(source),
            Origin::Env => ChoiceError::Env {
                var: ENV_BACKEND,
                value: pin.name.clone(),
                source,
            },
        }
    }

    /// The underlying selection error.
    pub fn select_error(&self) -> &crate::SelectError {
        match self {
            ChoiceError::Env { source, .. } => source,
            ChoiceError::Select(e) => e,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Flag => FLAG_BACKEND,
            Origin::Env => ENV_BACKEND,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(flag: Option<&str>, env: Option<&str>, disable: Option<&str>) -> BackendChoice {
        BackendChoice::parse(ChoiceInputs {
            flag,
            flag_scope: Some(PinScope::SomeOperation),
            env_backend: env,
            env_disable: disable,
            gpu: GpuPolicy::default(),
        })
    }

    #[test]
    fn the_flag_wins_over_the_variable_and_auto_defers_to_it() {
        let c = parse(Some("scalar"), Some("sha-ni"), None);
        let pin = c.pin.unwrap();
        assert_eq!((pin.name.as_str(), pin.origin), ("scalar", Origin::Flag));
        assert_eq!(pin.scope, PinScope::SomeOperation);
        for flag in [None, Some("auto"), Some(" ")] {
            let pin = parse(flag, Some(" sha-ni "), None).pin.unwrap();
            assert_eq!((pin.name.as_str(), pin.origin), ("sha-ni", Origin::Env));
            assert_eq!(pin.scope, PinScope::WhereSupported);
        }
        assert_eq!(parse(Some("auto"), Some("auto"), None).pin, None);
        assert_eq!(parse(None, Some(""), None).pin, None);
    }

    #[test]
    fn the_disabled_list_is_split_and_trimmed() {
        let c = parse(None, None, Some(" gpu, avx512 ,,"));
        assert_eq!(
            c.disabled.iter().map(String::as_str).collect::<Vec<_>>(),
            ["avx512", "gpu"]
        );
        assert_eq!(c.disabled_text, " gpu, avx512 ,,");
        assert!(parse(None, None, None).disabled.is_empty());
    }

    #[test]
    fn the_gpu_policy_reads_its_variables() {
        assert_eq!(GpuPolicy::parse(None, &[None, None]), GpuPolicy::default());
        for yes in ["1", "true", " yes "] {
            assert!(GpuPolicy::parse(Some(yes), &[]).allow_cpu);
        }
        assert!(!GpuPolicy::parse(Some("0"), &[]).allow_cpu);
        assert!(GpuPolicy::parse(None, &[None, Some("/x.json")]).driver_chosen);
        assert!(!GpuPolicy::parse(None, &[Some("")]).driver_chosen);
    }

    #[test]
    fn errors_name_the_variable_only_for_env_pins() {
        let e = crate::SelectError::Unavailable {
            name: "avx512".into(),
            reason: "no avx512f".into(),
        };
        let env = parse(None, Some("avx512"), None).pin.unwrap();
        assert_eq!(
            ChoiceError::from_pin(&env, e.clone()).to_string(),
            "MONTANA_BACKEND=avx512: backend 'avx512' is not available on this host: no avx512f"
        );
        let flag = parse(Some("avx512"), None, None).pin.unwrap();
        assert_eq!(
            ChoiceError::from_pin(&flag, e).to_string(),
            "backend 'avx512' is not available on this host: no avx512f"
        );
    }
}

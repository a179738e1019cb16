//! Which resources are sensitive: those carrying one of the configured `meta.security`
//! labels. Computed at write time into `resources.sensitive`, so every read path can
//! filter without parsing.

use serde_json::Value;

/// The default list of `meta.security` labels (system|code) that mark a resource as
/// sensitive: the HL7 v3 ActCode sensitivity codes for the categories that US and state law
/// protect (substance use disorder under 42 CFR Part 2, behavioural and mental health, HIV,
/// sexual and reproductive health, sexually transmitted disease, sexual/domestic violence),
/// the 42 CFR Part 2 policy code, and the v3 Confidentiality codes restricted and very
/// restricted.
pub const DEFAULT_LABELS: &[&str] = &[
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|ETH",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|SUD",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSY",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|PSYTHPN",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|BH",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|HIV",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|SEX",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|STD",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|SDV",
    "http://terminology.hl7.org/CodeSystem/v3-ActCode|42CFRPart2",
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R",
    "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|V",
];

/// The configured sensitivity labels, and whether the plan vouches for them: with
/// segmentation off (`--no-segmentation`) resources are still flagged, but the plan does not
/// claim it can separate sensitive data, so consent evaluation refuses `#regular` (non-sensitive
/// only) requests for members who have any (PDex consent decision flow).
#[derive(Debug, Clone)]
pub struct SensitivityLabels {
    labels: Vec<(String, String)>,
    segmentation: bool,
}

impl Default for SensitivityLabels {
    fn default() -> Self {
        Self::parse(DEFAULT_LABELS.iter().copied()).expect("default labels are well formed")
    }
}

impl SensitivityLabels {
    /// Parses `system|code` strings.
    pub fn parse<'a>(labels: impl IntoIterator<Item = &'a str>) -> anyhow::Result<Self> {
        let labels = labels
            .into_iter()
            .map(|l| {
                l.split_once('|')
                    .map(|(s, c)| (s.to_owned(), c.to_owned()))
                    .ok_or_else(|| anyhow::anyhow!("sensitivity label {l:?} is not system|code"))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(SensitivityLabels {
            labels,
            segmentation: true,
        })
    }

    /// Sets whether the plan can segment sensitive data.
    pub fn with_segmentation(mut self, segmentation: bool) -> Self {
        self.segmentation = segmentation;
        self
    }

    /// Can the plan segment sensitive data?
    pub fn segmentation(&self) -> bool {
        self.segmentation
    }

    /// The labels, `system|code`, for documentation and the CapabilityStatement.
    pub fn labels(&self) -> impl Iterator<Item = String> + '_ {
        self.labels.iter().map(|(s, c)| format!("{s}|{c}"))
    }

    /// Does `resource` carry a sensitive label in `meta.security`?
    pub fn is_sensitive(&self, resource: &Value) -> bool {
        resource["meta"]["security"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|coding| {
                let system = coding["system"].as_str().unwrap_or_default();
                let code = coding["code"].as_str().unwrap_or_default();
                self.labels.iter().any(|(s, c)| s == system && c == code)
            })
    }
}

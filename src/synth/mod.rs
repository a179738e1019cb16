//! Deterministic synthetic payer data (`pdex synth`): the data set of a health plan, written as
//! one NDJSON file per resource type plus `members.json`.
//!
//! Same options (seed included) → byte-identical files: every random choice comes from a
//! SplitMix64 stream derived from (seed, purpose, household or member index), and dates are
//! anchored to a fixed as-of date ([`dates::AS_OF`]), never the clock. Members are generated
//! one household at a time and written straight to per-type `BufWriter`s, so memory is flat
//! in N.
//!
//! Map: [`pool`] shared resources (organizations, practitioners, medications) · [`household`]
//! who the members are (demographics, identifiers, coverage history, hard cases) · [`member`]
//! everything a member has (clinical, claims, prior auths, provenance) · [`groups`] data-set-wide
//! Groups (opt-out, attribution) · [`representatives`] the RelatedPersons of guardians and
//! powers of attorney · [`sink`] NDJSON writers · [`rng`], [`dates`], [`tables`].
//!
//! Identifier systems of our payer ("Old Health Plan", NPI 9876543210, NAIC 98765): member id
//! (`v2-0203#MB`) [`pool::MEMBER_ID_SYSTEM`], payer-wide UMB (`hrex-temp#UMB`)
//! [`pool::UMB_SYSTEM`]; the HRex member-match example member also carries its IG identifier
//! `http://example.org/old-payer|DH10001235`.
//!
//! `members.json` is a JSON array, one object per member, with exactly these keys:
//! `patient_id` (Patient id), `umb` (value of the UMB identifier), `member_id` (value of the MB
//! identifier on Patient and Coverage), `subscriber_id` (Coverage.subscriberId, shared by a
//! household), `payer` (`{system, value}`: our payer's NPI), `family` (string), `given`
//! (array of strings, exactly `Patient.name[0].given`), `birthDate`, `gender`, `coverage_id`
//! (the latest Coverage: current, or the last one that ended), `has_sensitive` (the member has
//! resources labelled in `meta.security`), `opted_out` (listed in the `Group/member-opt-out`),
//! `household` (household id; members of one household share the subscriber).
//!
//! Ids: members `m000042`, their resources `m000042-<kind>-<n>` (e.g. `m000042-enc-3`,
//! `m000042-cov-1`, `m000042-pa-1`, `m000042-trl` for the treatment-relationship Group);
//! shared resources `org-*`, `loc-*`, `pr-NNN`, `prrole-NNN`, `med-<rxnorm>`; data-set Groups
//! `member-opt-out`, `atr-<org>`.

pub mod dates;
pub mod groups;
pub mod household;
pub mod member;
pub mod pool;
pub mod representatives;
pub mod rng;
pub mod sink;
pub mod tables;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::json;

/// What `pdex synth` was asked for.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub members: u64,
    pub seed: u64,
    pub out: PathBuf,
    pub start_year: i32,
    /// Share of members (0.0–1.0) that have sensitive data.
    pub sensitive_share: f64,
}

/// What was written.
#[derive(Debug, Clone, Default)]
pub struct SynthSummary {
    /// (resource type, count), sorted by type.
    pub counts: Vec<(String, u64)>,
    /// Members (Patients) written.
    pub members: u64,
    /// Households (subscribers) written.
    pub households: u64,
    /// Members with sensitive (security-labelled) data.
    pub sensitive_members: u64,
    /// Members in the provider-access opt-out Group.
    pub opted_out_members: u64,
}

/// Share of members who opted out of Provider Access.
const OPT_OUT_SHARE: f64 = 0.04;

/// Writes the data set to `opts.out`.
pub fn run(opts: &SynthOptions) -> anyhow::Result<SynthSummary> {
    if !(0.0..=1.0).contains(&opts.sensitive_share) {
        bail!(
            "--sensitive-share must be between 0 and 1, got {}",
            opts.sensitive_share
        );
    }
    let (as_of_year, ..) = dates::AS_OF;
    if !(1990..=as_of_year).contains(&opts.start_year) {
        bail!(
            "--start-year must be between 1990 and {as_of_year}, got {}",
            opts.start_year
        );
    }
    let mut sink = sink::Sink::new(&opts.out)?;
    pool::write(&mut sink)?;
    let members_path = opts.out.join("members.json");
    let mut members_json = BufWriter::new(
        File::create(&members_path)
            .with_context(|| format!("cannot create {}", members_path.display()))?,
    );
    members_json.write_all(b"[")?;
    let mut groups = groups::Groups::new(&opts.out)?;
    let planner = household::Planner {
        seed: opts.seed,
        start_year: opts.start_year,
        sensitive_share: opts.sensitive_share,
        opt_out_share: OPT_OUT_SHARE,
    };
    let mut summary = SynthSummary::default();
    let mut idx = 0;
    let mut k = 0;
    while idx < opts.members {
        let hh = planner.household(k, idx, opts.members - idx);
        for p in &hh.members {
            member::MemberGen::new(opts.seed, &mut sink, &hh, p).generate()?;
            groups.add(p)?;
            if idx > 0 {
                members_json.write_all(b",")?;
            }
            members_json.write_all(b"\n")?;
            serde_json::to_writer(
                &mut members_json,
                &json!({
                    "patient_id": p.id,
                    "umb": p.umb,
                    "member_id": p.member_id,
                    "subscriber_id": hh.subscriber_id,
                    "payer": { "system": pool::NPI_SYSTEM, "value": pool::PAYER_NPI },
                    "family": p.family,
                    "given": p.given,
                    "birthDate": dates::date(p.birth),
                    "gender": p.gender,
                    "coverage_id": p.coverage().id,
                    "has_sensitive": p.has_sensitive,
                    "opted_out": p.opted_out,
                    "household": hh.id,
                }),
            )?;
            summary.sensitive_members += p.has_sensitive as u64;
            summary.opted_out_members += p.opted_out as u64;
            idx += 1;
        }
        representatives::write(&mut sink, &hh)?;
        k += 1;
    }
    members_json.write_all(b"\n]\n")?;
    members_json
        .flush()
        .with_context(|| format!("cannot write {}", members_path.display()))?;
    groups.finish(&mut sink)?;
    summary.members = idx;
    summary.households = k;
    summary.counts = sink.finish()?;
    Ok(summary)
}

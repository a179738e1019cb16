//! Who the members are: households (one subscriber covering dependents), demographics,
//! identifiers, coverage history, PCP, sensitivity and opt-out flags. The first households of
//! every data set are the deliberate hard cases (the HRex member-match example, twins, a
//! name + birth date collision across households, name variants, a terminated + current coverage,
//! a run-off member); later households draw the same cases at random rates.

use super::dates::{as_of_day, days_from_civil};
use super::pool;
use super::rng::{Rng, tag};
use super::tables;

/// One coverage period of a member.
#[derive(Debug, Clone)]
pub struct CoverageSpec {
    pub id: String,
    pub start: i64,
    pub end: Option<i64>,
    /// `active` or `cancelled`.
    pub status: &'static str,
    pub plan: usize,
    pub group: usize,
    /// Reproduces the HRex `CoverageToMatch` example (identifier system, classes).
    pub ig_example: bool,
}

#[derive(Debug, Clone)]
pub struct Person {
    pub idx: u64,
    pub id: String,
    pub family: String,
    pub given: Vec<String>,
    pub suffix: Option<&'static str>,
    pub gender: &'static str,
    pub birth: i64,
    /// subscriber-relationship code: self, spouse, child.
    pub relationship: &'static str,
    /// 0 for the subscriber, 1.. for dependents.
    pub dependent: u32,
    pub member_id: String,
    pub umb: String,
    pub coverages: Vec<CoverageSpec>,
    pub has_sensitive: bool,
    pub opted_out: bool,
    /// Practitioner index of the primary care provider.
    pub pcp: usize,
    pub ig_example: bool,
}

impl Person {
    /// The latest coverage (current, or the last one that ended).
    pub fn coverage(&self) -> &CoverageSpec {
        self.coverages.last().expect("every member has a coverage")
    }
    /// First and last day with coverage.
    pub fn covered_span(&self) -> (i64, i64) {
        let start = self.coverages[0].start.max(self.birth);
        let end = self
            .coverage()
            .end
            .unwrap_or_else(as_of_day)
            .min(as_of_day());
        (start, end.max(start))
    }
}

#[derive(Debug, Clone)]
pub struct Household {
    pub k: u64,
    pub id: String,
    pub subscriber_id: String,
    pub line: String,
    pub city: usize,
    pub zip: String,
    pub phone: String,
    pub members: Vec<Person>,
}

/// Group numbers (employer groups): (value, name).
pub const GROUPS: &[(&str, &str)] = &[
    ("GRP10021", "Acme Manufacturing"),
    ("GRP10388", "Lakeside School District"),
    ("GRP11902", "City of Columbus"),
    ("GRP12550", "Individual Market"),
    ("CB135", "Old Health Plan Group CB135"),
];
/// Plans: (value, name).
pub const PLANS: &[(&str, &str)] = &[
    ("PLN-GOLD-PPO", "Gold PPO"),
    ("PLN-SILVER-HMO", "Silver HMO"),
    ("PLN-BRONZE-HDHP", "Bronze HDHP"),
    ("B37FC", "Silver Choice B37FC"),
];
const IG_GROUP: usize = 4;
const IG_PLAN: usize = 3;

/// Special households, in order, at the start of every data set.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    IgExample,
    Twins,
    Collision,
    NameVariants,
    TerminatedAndCurrent,
    RunOff,
    Random,
}

fn kind(k: u64) -> Kind {
    match k {
        0 => Kind::IgExample,
        1 => Kind::Twins,
        2 | 3 => Kind::Collision,
        4 => Kind::NameVariants,
        5 => Kind::TerminatedAndCurrent,
        6 => Kind::RunOff,
        _ if k % 50 == 20 || k % 50 == 21 => Kind::Collision,
        _ => Kind::Random,
    }
}

/// Template of a name + birth date collision: households 2 and 3 share one, and then each
/// pair (50n + 20, 50n + 21) shares its own.
fn collide_key(k: u64) -> u64 {
    if k < 10 { u64::MAX } else { k / 50 }
}

pub struct Planner {
    pub seed: u64,
    pub start_year: i32,
    pub sensitive_share: f64,
    pub opt_out_share: f64,
}

fn patient_id(idx: u64) -> String {
    format!("m{idx:06}")
}

/// A stable payer-wide number: a bijection of the member index (7919 is prime, so the map is
/// one-to-one modulo 10^10), so UMBs are unique without looking like a counter.
fn umb(idx: u64) -> String {
    format!(
        "U{:010}",
        (idx.wrapping_mul(7_919) + 4_000_000_007) % 10_000_000_000
    )
}

impl Planner {
    /// Plans household number `k`, whose first member gets index `first`, with at most
    /// `room` members.
    pub fn household(&self, k: u64, first: u64, room: u64) -> Household {
        let mut r = Rng::derive(self.seed, tag::HOUSEHOLD, k);
        let kind = kind(k);
        let as_of = as_of_day();
        let start = days_from_civil(self.start_year, 1, 1);
        let size = match kind {
            Kind::IgExample | Kind::Collision | Kind::TerminatedAndCurrent | Kind::RunOff => 1,
            Kind::Twins => 4,
            Kind::NameVariants => 2,
            Kind::Random => *r.pick(&[1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 3, 3, 3, 4, 4, 5]),
        }
        .min(room);
        let city = r.below(tables::CITIES.len() as u64) as usize;
        let (_, _, zip3) = tables::CITIES[city];
        let mut hh = Household {
            k,
            id: format!("hh{k:06}"),
            subscriber_id: format!("S{:08}", 10_000_000 + k * 3 + 1),
            line: format!("{} {}", r.range(10, 9_999), r.pick(tables::STREETS)),
            city,
            zip: format!("{zip3}{:02}", r.below(100)),
            phone: format!("555-{:03}-{:04}", r.range(200, 999), r.below(10_000)),
            members: Vec::with_capacity(size as usize),
        };
        let family = self.family_name(&mut r, kind);
        // Subscriber age 22..80; birth date.
        let sub_birth = as_of - r.range(22 * 365, 80 * 365);
        // Coverage history shared by the household.
        let plan = r.below(3) as usize;
        let group = r.below(4) as usize;
        let twins_birth = as_of - r.range(365, 17 * 365);
        let roll = r.unit();
        let history = match kind {
            Kind::TerminatedAndCurrent => 1,
            Kind::RunOff => 2,
            Kind::Random if roll < 0.08 => 1,
            Kind::Random if roll < 0.12 => 2,
            _ => 0,
        };
        let enroll = start + r.range(0, (as_of - 120 - start).max(1));
        let switch = enroll + r.range(60, (as_of - 60 - enroll).max(61));
        let run_off_end = as_of - r.range(30, 300);
        let random_twins = kind == Kind::Random && r.chance(0.05);
        for pos in 0..size {
            let idx = first + pos;
            let mut m = Rng::derive(self.seed, tag::MEMBER, idx);
            let relationship = match pos {
                0 => "self",
                1 if size >= 2 && !(kind == Kind::Random && size == 2 && m.chance(0.3)) => "spouse",
                _ => "child",
            };
            let gender = if kind == Kind::IgExample || m.chance(0.5) {
                "female"
            } else {
                "male"
            };
            let birth = match (kind, relationship) {
                (_, "self") => sub_birth,
                (_, "spouse") => sub_birth + m.range(-5 * 365, 5 * 365),
                (Kind::Twins, _) => twins_birth,
                (Kind::Random, _) if random_twins && pos >= 2 => twins_birth,
                _ => {
                    let sub_age_days = as_of - sub_birth;
                    let max_age = ((sub_age_days - 18 * 365) / 365).clamp(0, 25);
                    as_of - m.range(30, max_age * 365 + 300)
                }
            };
            let mut given = vec![self.given_name(&mut m, gender, kind, pos)];
            if m.chance(0.3) {
                given.push(self.given_name(&mut m, gender, Kind::Random, pos));
            }
            let mut family = family.clone();
            let mut suffix = None;
            let mut birth = birth;
            if kind == Kind::NameVariants {
                if pos == 0 {
                    suffix = Some("Jr.");
                    given = vec!["José".into(), "Luis".into()];
                } else {
                    family = "Müller-Ramírez".into();
                    given = vec!["Zoë".into(), "Anne-Marie".into()];
                }
            } else if kind == Kind::Random && relationship == "self" && m.chance(0.03) {
                suffix = Some(*m.pick(tables::SUFFIXES));
            }
            if kind == Kind::Collision {
                let mut c = Rng::derive(self.seed, tag::COLLIDE, collide_key(k));
                let g = c.below(2) == 0;
                family = c.pick(tables::FAMILY).to_string();
                given = vec![
                    c.pick(if g {
                        tables::FEMALE_GIVEN
                    } else {
                        tables::MALE_GIVEN
                    })
                    .to_string(),
                ];
                birth = as_of - c.range(25 * 365, 70 * 365);
                let _ = g;
            }
            let ig = kind == Kind::IgExample;
            if ig {
                family = "Person".into();
                given = vec!["Patricia".into(), "Ann".into()];
                birth = days_from_civil(1974, 12, 25);
            }
            let gender = if kind == Kind::Collision {
                let mut c = Rng::derive(self.seed, tag::COLLIDE, collide_key(k));
                if c.below(2) == 0 { "female" } else { "male" }
            } else {
                gender
            };
            let id = patient_id(idx);
            let cov_start = enroll.max(birth);
            let coverages = if ig {
                vec![
                    CoverageSpec {
                        id: format!("{id}-cov-1"),
                        start: days_from_civil(2011, 5, 23),
                        end: Some(days_from_civil(2012, 5, 23)),
                        status: "cancelled",
                        plan: IG_PLAN,
                        group: IG_GROUP,
                        ig_example: true,
                    },
                    CoverageSpec {
                        id: format!("{id}-cov-2"),
                        start: days_from_civil(self.start_year, 1, 1),
                        end: None,
                        status: "active",
                        plan: IG_PLAN,
                        group: IG_GROUP,
                        ig_example: true,
                    },
                ]
            } else {
                match history {
                    1 => vec![
                        CoverageSpec {
                            id: format!("{id}-cov-1"),
                            start: cov_start,
                            end: Some(switch.max(cov_start + 30)),
                            status: "cancelled",
                            plan,
                            group,
                            ig_example: false,
                        },
                        CoverageSpec {
                            id: format!("{id}-cov-2"),
                            start: switch.max(cov_start + 30) + 1,
                            end: None,
                            status: "active",
                            plan: (plan + 1) % 3,
                            group,
                            ig_example: false,
                        },
                    ],
                    2 => vec![CoverageSpec {
                        id: format!("{id}-cov-1"),
                        start: cov_start.min(run_off_end - 60),
                        end: Some(run_off_end),
                        status: "cancelled",
                        plan,
                        group,
                        ig_example: false,
                    }],
                    _ => vec![CoverageSpec {
                        id: format!("{id}-cov-1"),
                        start: cov_start,
                        end: None,
                        status: "active",
                        plan,
                        group,
                        ig_example: false,
                    }],
                }
            };
            let member_id = if ig {
                "DH10001235".to_string()
            } else {
                format!("{}{:02}", hh.subscriber_id.replacen('S', "M", 1), pos + 1)
            };
            let forced_sensitive = idx == 2 && self.sensitive_share > 0.0;
            let has_sensitive = forced_sensitive || m.chance(self.sensitive_share);
            let forced_opt_out = idx == 3 && self.opt_out_share > 0.0;
            let opted_out = !ig && (forced_opt_out || m.chance(self.opt_out_share));
            let adult = super::dates::years_between(birth, as_of) >= 18;
            let pcp_org = if adult {
                pool::PCP_ORGS[m.below(pool::PCP_ORGS.len() as u64) as usize]
            } else {
                pool::ORG_PEDIATRICS
            };
            let pcp = pcp_org * pool::PRACTITIONERS_PER_ORG
                + m.below(pool::PRACTITIONERS_PER_ORG as u64) as usize;
            hh.members.push(Person {
                idx,
                id,
                family,
                given,
                suffix,
                gender,
                birth,
                relationship,
                dependent: pos as u32,
                member_id,
                umb: umb(idx),
                coverages,
                has_sensitive,
                opted_out,
                pcp,
                ig_example: ig,
            });
        }
        if kind == Kind::IgExample {
            hh.subscriber_id = "DH10001235".into();
        }
        hh
    }

    fn family_name(&self, r: &mut Rng, kind: Kind) -> String {
        match kind {
            // "Person" is reserved for the IG example; FAMILY does not contain it.
            Kind::Twins => r.pick(&["Smith", "Nguyen", "García"]).to_string(),
            _ => r.pick(tables::FAMILY).to_string(),
        }
    }

    fn given_name(&self, r: &mut Rng, gender: &str, kind: Kind, pos: u64) -> String {
        let list = if gender == "female" {
            tables::FEMALE_GIVEN
        } else {
            tables::MALE_GIVEN
        };
        if kind == Kind::Twins && pos >= 2 {
            // Twins get different first names but share birth date and family name.
            return list[(pos as usize * 7) % list.len()].to_string();
        }
        r.pick(list).to_string()
    }
}

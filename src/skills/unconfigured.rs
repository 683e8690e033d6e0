//! The GitHub architecture skills without `GITHUB_TOKEN`: registered all the same (the original
//! left them out, so clients got "Unknown skill"), each answering `status: "not_configured"`
//! with the shape its client renders and a recommendation that says what to configure — the web
//! frontend's Compliance page shows only successful answers, so the explanation is a success
//! (docs/skills-api.md, "GitHub skills without a token").

use serde_json::{Map, Value, json};

use super::context::SkillContext;
use super::error::SkillError;
use super::registry::{Skill, SkillOutput, handler, output};

const MESSAGE: &str = "GITHUB_TOKEN is not configured: nexusd cannot read repositories on GitHub, so \
                       this check did not run. Set GITHUB_TOKEN (a token that can read the \
                       repositories) and restart nexusd.";

/// `skill` with a handler that answers `not_configured` in its own shape.
pub fn not_configured(mut skill: Skill) -> Skill {
    let id = skill.id;
    skill.uses_database = false;
    skill.handler = handler(
        move |_ctx: SkillContext, input: Map<String, Value>| async move {
            Ok::<SkillOutput, SkillError>(answer(id, &input))
        },
    );
    skill
}

fn answer(id: &str, input: &Map<String, Value>) -> SkillOutput {
    let repository = input.get("repository").cloned().unwrap_or(Value::Null);
    let advice = json!({
        "priority": "high",
        "title": "Configure GitHub access",
        "description": MESSAGE,
        "estimated_effort": "5 minutes",
        "impact": "Enables architecture validation and improvement suggestions",
    });
    let common = json!({
        "repository": repository,
        "status": "not_configured",
        "error_type": "not_configured",
        "message": MESSAGE,
    });
    let specific = match id {
        "validate_repository_architecture" => json!({
            "overall_compliance_score": 0.0,
            "compliance_grade": "N/A",
            "summary": {"total_checks": 0, "passed_checks": 0, "failed_checks": 0, "critical_violations": 0},
            "categories": {},
            "critical_violations": [],
            "recommendations": [advice],
        }),
        "check_specific_standard" => json!({
            "standard_category": input.get("standard_category").cloned().unwrap_or(Value::Null),
            "compliance_score": 0.0,
            "passed": false,
            "checks_performed": 0,
            "violations": [],
            "recommendations": [advice],
        }),
        _ => json!({
            "recommendations": [advice],
            "total_recommendations": 1,
        }),
    };
    let mut out = output(common);
    out.extend(output(specific));
    out
}

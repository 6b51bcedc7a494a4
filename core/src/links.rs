//! The paths of the web UI's pages of a DAG, a run and a task instance, shared by the pages
//! and by what links to them from outside (a handler's `UPDRAFT_TASK_URL`). Each segment is
//! percent-encoded: run ids hold `:` and `+`.

/// `/dags/{dag_id}`.
pub fn dag_url(dag_id: &str) -> String {
    format!("/dags/{}", segment(dag_id))
}

/// `/dags/{dag_id}/runs/{run_id}`.
pub fn run_url(dag_id: &str, run_id: &str) -> String {
    format!("{}/runs/{}", dag_url(dag_id), segment(run_id))
}

/// `/dags/{dag_id}/runs/{run_id}/tasks/{task_id}`.
pub fn task_url(dag_id: &str, run_id: &str, task_id: &str) -> String {
    format!("{}/tasks/{}", run_url(dag_id, run_id), segment(task_id))
}

/// A path segment: everything but unreserved characters percent-encoded.
fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_encoded_as_one_segment() {
        assert_eq!(
            task_url("etl", "manual__2024-01-01T00:00:00+00:00", "load"),
            "/dags/etl/runs/manual__2024-01-01T00%3A00%3A00%2B00%3A00/tasks/load"
        );
    }
}

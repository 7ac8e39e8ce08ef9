//! The host's and the process's figures for a status record, from `sysinfo`.

use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// CPU and memory of this process and its host, measured between two samples.
pub(crate) struct HostSampler {
    sys: Option<System>,
    pid: Option<Pid>,
}

/// One sample.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct HostSample {
    pub(crate) process_cpu_percent: f32,
    pub(crate) host_cpu_percent: f32,
    pub(crate) rss_bytes: u64,
    pub(crate) host_available_bytes: u64,
}

impl HostSampler {
    /// A sampler; its first sample's CPU figures cover the time since it was made.
    pub(crate) fn new() -> HostSampler {
        let mut sampler = HostSampler {
            sys: System::new().ok(),
            pid: sysinfo::get_current_pid().ok(),
        };
        let _ = sampler.sample();
        sampler
    }

    /// CPU use since the last sample, memory now. Zeros where the platform tells nothing.
    pub(crate) fn sample(&mut self) -> HostSample {
        let Some(sys) = self.sys.as_mut() else {
            return HostSample::default();
        };
        sys.refresh_cpu_usage();
        sys.refresh_memory();
        let mut sample = HostSample {
            host_cpu_percent: sys.global_cpu_usage(),
            host_available_bytes: sys.available_memory(),
            ..HostSample::default()
        };
        if let Some(pid) = self.pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
            if let Some(p) = sys.process(pid) {
                sample.process_cpu_percent = p.cpu_usage();
                sample.rss_bytes = p.memory();
            }
        }
        sample
    }
}

/// The host's name, or an empty string where it cannot be read.
pub(crate) fn hostname() -> String {
    System::host_name().unwrap_or_default()
}

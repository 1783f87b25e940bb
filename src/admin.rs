//! The CLI's storage administration commands: `silo gc` and `silo scrub`.

use anyhow::bail;
use storage_node::store::{GcReport, ScrubReport};

use crate::cli::ScrubArgs;
use crate::client::{ClientArgs, block_on};

/// `silo gc`: one GC pass, and what it reclaimed.
pub fn gc(client: &ClientArgs) -> anyhow::Result<()> {
    let report: GcReport = block_on(client.post("/v1/storage/gc"))?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!("packs sealed           {}", report.packs_sealed);
    println!("chunks deleted         {}", report.chunks_deleted);
    println!("stored bytes released  {}", report.stored_bytes_released);
    println!("packs compacted        {}", report.packs_compacted);
    println!("packs punched          {}", report.packs_punched);
    println!("packs skipped, damaged {}", report.packs_skipped_damaged);
    println!("packs deleted          {}", report.packs_deleted);
    println!("disk bytes reclaimed   {}", report.disk_bytes_reclaimed);
    Ok(())
}

/// `silo scrub`: verify chunks; list the damaged ones and the objects they break.
pub fn scrub(args: ScrubArgs, client: &ClientArgs) -> anyhow::Result<()> {
    let report: ScrubReport = block_on(client.post(&format!("/v1/storage/scrub?sample={}", args.sample)))?;
    if client.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("checked {} chunks ({} bytes)", report.chunks_checked, report.bytes_checked);
        if !report.damaged.is_empty() {
            println!("{:<10} {:<18} {:<8} {:<12} OBJECTS", "TENANT", "CHUNK", "PACK", "OFFSET");
            for damaged in &report.damaged {
                let objects: Vec<String> = damaged.objects.iter().map(i64::to_string).collect();
                println!(
                    "{:<10} {:<18} {:<8} {:<12} {}",
                    damaged.tenant_id,
                    &damaged.chunk[..16],
                    damaged.pack,
                    damaged.offset,
                    objects.join(",")
                );
            }
        }
    }
    if !report.damaged.is_empty() {
        bail!("{} damaged chunk(s)", report.damaged.len());
    }
    Ok(())
}

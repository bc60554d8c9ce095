//! What the bench tools share: the lines the bench scripts read from them.

use std::time::Instant;

/// Prints how fast `count` messages were relayed since `started` (the first message), as
/// `bench/w5.sh` reads it.
pub fn print_relayed(count: usize, started: Option<Instant>) {
    let seconds = started.map_or(0.0, |started| started.elapsed().as_secs_f64());
    println!(
        "relayed {count} messages in {seconds:.2} s: {:.0} messages/s",
        count as f64 / seconds
    );
}

/// Prints that `count` messages were drained, with the time of the last in µs since the Unix
/// epoch, as `bench/w5.sh` reads it.
///
/// # Errors
///
/// The clock is before the Unix epoch.
pub fn print_drained(count: usize) -> anyhow::Result<()> {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    println!("drained {count} messages; last at {} us", now.as_micros());
    Ok(())
}

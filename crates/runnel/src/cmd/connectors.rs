//! `runnel connectors` and `runnel settings`: what a script can use, printed from the
//! connector descriptors and the settings table.

use clap::Args;
use runnel_connectors::descriptor;
use runnel_connectors::registry::connectors as all;

/// `runnel connectors` / `runnel settings`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a Markdown table (as in the README)
    #[arg(long)]
    pub markdown: bool,
}

/// Prints every connector with its options.
pub fn connectors(args: ListArgs) -> anyhow::Result<()> {
    let list = all();
    if args.markdown {
        print!("{}", descriptor::markdown(&list));
        return Ok(());
    }
    for c in &list {
        println!("{:<10} {} — {}", c.name, c.roles(), c.doc);
        for o in c.options {
            let default = match (o.required, o.default) {
                (true, _) => "required".to_string(),
                (false, Some(d)) => format!("default {d}"),
                (false, None) => String::new(),
            };
            println!(
                "    {:<20} {:<28} {:<28} {}",
                o.key,
                o.ty.describe(),
                default,
                o.doc
            );
        }
    }
    Ok(())
}

/// Prints every `SET` setting.
pub fn settings(args: ListArgs) -> anyhow::Result<()> {
    if args.markdown {
        print!("{}", runnel_runtime::settings::markdown());
        return Ok(());
    }
    for d in runnel_runtime::settings::SETTINGS {
        println!(
            "{:<44} {:<22} default {:<28} {}",
            d.key,
            d.ty.describe(),
            d.default,
            d.doc
        );
    }
    Ok(())
}

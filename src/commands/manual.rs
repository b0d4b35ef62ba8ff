//! The man pages: `selfheal(1)` (clap's sections plus EXIT STATUS, ENVIRONMENT, FILES,
//! EXAMPLES and SEE ALSO from `man/selfheal.1.extra`), one `selfheal-<command>(1)` per visible
//! command, and `selfheal.yml(5)` (`man/selfheal.yml.5`).

use clap::CommandFactory;

use crate::cli::Cli;

const EXTRA: &str = include_str!("../../man/selfheal.1.extra");
const CONFIG_PAGE: &str = include_str!("../../man/selfheal.yml.5");

/// One page: its file name (`selfheal-run.1`) and its roff.
pub(crate) struct Page {
    pub file: String,
    pub roff: Vec<u8>,
}

impl Page {
    /// The man section, from the file name.
    pub(crate) fn section(&self) -> &str {
        self.file.rsplit('.').next().unwrap_or("1")
    }
}

/// Every page, `selfheal.1` first.
pub(crate) fn pages() -> std::io::Result<Vec<Page>> {
    let mut command = Cli::command();
    command.build();
    let mut main = Vec::new();
    let man = clap_mangen::Man::new(command.clone());
    man.render_title(&mut main)?;
    man.render_name_section(&mut main)?;
    man.render_synopsis_section(&mut main)?;
    man.render_description_section(&mut main)?;
    man.render_options_section(&mut main)?;
    man.render_subcommands_section(&mut main)?;
    main.extend_from_slice(EXTRA.as_bytes());
    man.render_version_section(&mut main)?;
    let mut pages = vec![Page {
        file: "selfheal.1".to_owned(),
        roff: main,
    }];
    for sub in command
        .get_subcommands()
        .filter(|sub| !sub.is_hide_set() && sub.get_name() != "help")
    {
        let name = format!("selfheal-{}", sub.get_name());
        let mut roff = Vec::new();
        clap_mangen::Man::new(sub.clone().display_name(&name)).render(&mut roff)?;
        roff.extend_from_slice(b".SH \"SEE ALSO\"\n\\fBselfheal\\fR(1), \\fBselfheal.yml\\fR(5)\n");
        pages.push(Page {
            file: format!("{name}.1"),
            roff,
        });
    }
    pages.push(Page {
        file: "selfheal.yml.5".to_owned(),
        roff: CONFIG_PAGE.as_bytes().to_vec(),
    });
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_visible_command_has_a_page_and_the_main_page_its_sections() {
        let pages = pages().unwrap();
        let files: Vec<&str> = pages.iter().map(|p| p.file.as_str()).collect();
        for file in [
            "selfheal.1",
            "selfheal-run.1",
            "selfheal-digest.1",
            "selfheal.yml.5",
        ] {
            assert!(files.contains(&file), "{files:?}");
        }
        assert!(
            !files
                .iter()
                .any(|f| f.contains("serve-demo") || f.contains("sandbox"))
        );
        let main = String::from_utf8(pages[0].roff.clone()).unwrap();
        for section in [
            "EXIT STATUS",
            "ENVIRONMENT",
            "FILES",
            "EXAMPLES",
            "SEE ALSO",
        ] {
            assert!(
                main.contains(&format!(".SH {section}"))
                    || main.contains(&format!(".SH \"{section}\"")),
                "{section}"
            );
        }
        let run = &pages[files.iter().position(|f| *f == "selfheal-run.1").unwrap()];
        let run = String::from_utf8_lossy(&run.roff);
        assert!(run.contains("\\-\\-dry\\-run"), "{run}");
    }
}

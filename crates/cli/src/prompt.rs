//! The terminal's side of authenticator prompts: messages on standard error, the PIN read from
//! the terminal without echo.

use countersign_approver::authn::Prompt;

/// Prompts on the controlling terminal.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Terminal;

impl Prompt for Terminal {
    fn pin(&self) -> Option<String> {
        rpassword::prompt_password("Security key PIN: ")
            .ok()
            .filter(|pin| !pin.is_empty())
    }

    #[expect(clippy::print_stderr, reason = "the prompt is the terminal's")]
    fn touch(&self) {
        eprintln!("Touch your authenticator to confirm…");
    }

    #[expect(clippy::print_stderr, reason = "the prompt is the terminal's")]
    fn processing(&self) {
        eprintln!("Working…");
    }
}

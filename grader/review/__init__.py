"""`labgrader review`: a local web app to grade the flagged answers question by question, by answer group."""

fn main() -> std::process::ExitCode {
    fablab::main()
}

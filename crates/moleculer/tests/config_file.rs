//! The repository's `moleculer.toml` must stay a valid broker configuration.

use moleculer::BrokerOptions;

#[test]
fn the_shipped_moleculer_toml_is_valid() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../moleculer.toml");
    let text = std::fs::read_to_string(path).expect("moleculer.toml at the repository root");
    let options: BrokerOptions =
        toml::from_str(&text).unwrap_or_else(|e| panic!("moleculer.toml: {e}"));
    options.validate().unwrap();
    assert_eq!(options.heartbeat_interval, 5.0);
    moleculer::runner::builder_for(&options).expect("its transporter and discoverer resolve");
}

#[test]
fn a_misspelt_key_is_named() {
    let err = toml::from_str::<BrokerOptions>("heartbeatIntreval = 5").unwrap_err();
    assert!(err.to_string().contains("heartbeatIntreval"), "{err}");
}

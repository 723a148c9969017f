class ConfigMissing extends Error {
  constructor(message) {
    super(message);
    this.name = 'ConfigMissing';
  }
}
throw new ConfigMissing('no config at init');
